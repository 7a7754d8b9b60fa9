"""worker_heartbeat: each worker's last sign of life, read by `nezabyt doctor`

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-04 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'worker_heartbeat',
        sa.Column('worker_id', sa.String(length=128), nullable=False),
        sa.Column('beat_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('worker_id', name=op.f('pk_worker_heartbeat')),
    )


def downgrade() -> None:
    op.drop_table('worker_heartbeat')
