"""journal_change: each client's change by a daily run or a bulk load (status and responsible before
and after, the row's dating before), so the «Журнал» tab can list it and an undo can put it back

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 13:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('journal_change',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('job_run_id', sa.Integer(), nullable=False),
    sa.Column('entity_type', sa.String(length=16), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=False),
    sa.Column('old_status', sa.String(length=32), nullable=True),
    sa.Column('new_status', sa.String(length=32), nullable=True),
    sa.Column('old_status_set_on', sa.Date(), nullable=True),
    sa.Column('old_previous_status', sa.String(length=32), nullable=True),
    sa.Column('old_assigned_by_id', sa.Integer(), nullable=True),
    sa.Column('new_assigned_by_id', sa.Integer(), nullable=True),
    sa.Column('undo_state', sa.String(length=16), nullable=True),
    sa.Column('undo_note', sa.Text(), nullable=True),
    sa.Column('undo_run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['job_run_id'], ['job_run.id'], name=op.f('fk_journal_change_job_run_id_job_run'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['portal_id'], ['portal.id'], name=op.f('fk_journal_change_portal_id_portal'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_change'))
    )
    with op.batch_alter_table('journal_change', schema=None) as batch_op:
        batch_op.create_index('ix_journal_change_entity', ['portal_id', 'entity_type', 'entity_id'], unique=False)
        batch_op.create_index('ix_journal_change_run', ['job_run_id', 'entity_type', 'entity_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('journal_change', schema=None) as batch_op:
        batch_op.drop_index('ix_journal_change_run')
        batch_op.drop_index('ix_journal_change_entity')
    op.drop_table('journal_change')
