"""outbox and notification_log attempts: a write or message the portal keeps refusing for a passing
reason is tried a bounded number of times, then marked failed

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-05 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('outbox', 'notification_log'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    for table in ('outbox', 'notification_log'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('attempts')
