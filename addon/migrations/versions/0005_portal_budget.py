"""portal_budget: each portal's plan limits and shared leaky bucket (one pace for web and workers)

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-04 21:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('portal_budget',
    sa.Column('portal_id', sa.Integer(), nullable=False),
    sa.Column('plan', sa.String(length=64), nullable=True),
    sa.Column('rps', sa.Float(), nullable=False),
    sa.Column('burst', sa.Integer(), nullable=False),
    sa.Column('level', sa.Float(), nullable=False),
    sa.Column('stamp', sa.Float(), nullable=False),
    sa.Column('calls', sa.BigInteger(), nullable=False),
    sa.Column('plan_read_at', sa.DateTime(), nullable=True),
    sa.Column('limited_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_error_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['portal_id'], ['portal.id'], name=op.f('fk_portal_budget_portal_id_portal'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('portal_id', name=op.f('pk_portal_budget'))
    )


def downgrade() -> None:
    op.drop_table('portal_budget')
