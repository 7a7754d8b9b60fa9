"""portal_settings.dated_version: the options version the service table's dates were computed under

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL on existing portals: each re-dates once, at its next daily run.
    with op.batch_alter_table('portal_settings') as batch_op:
        batch_op.add_column(sa.Column('dated_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('portal_settings') as batch_op:
        batch_op.drop_column('dated_version')
