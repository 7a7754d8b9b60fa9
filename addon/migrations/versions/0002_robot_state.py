"""robot state and records (pipeline robots)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 21:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('robot_state',
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['portal_id'], ['portal.id'], name=op.f('fk_robot_state_portal_id_portal'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('portal_id', 'key', name=op.f('pk_robot_state'))
    )
    op.create_table('robot_record',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('document_id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('value', sa.String(length=255), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('reported_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['portal_id'], ['portal.id'], name=op.f('fk_robot_record_portal_id_portal'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_robot_record'))
    )
    with op.batch_alter_table('robot_record', schema=None) as batch_op:
        batch_op.create_index('ix_robot_record_document', ['portal_id', 'document_id'], unique=False)
        batch_op.create_index('ix_robot_record_kind', ['portal_id', 'kind', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('robot_record', schema=None) as batch_op:
        batch_op.drop_index('ix_robot_record_kind')
        batch_op.drop_index('ix_robot_record_document')
    op.drop_table('robot_record')
    op.drop_table('robot_state')
