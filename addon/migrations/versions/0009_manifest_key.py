"""portal.manifest_key and portal.app_version: the manifest is applied once per app version (the
portal's VERSION and our manifest's fingerprint); the same version installed again changes nothing

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('portal') as batch:
        batch.add_column(sa.Column('manifest_key', sa.String(length=96), nullable=True))
        batch.add_column(sa.Column('app_version', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('portal') as batch:
        batch.drop_column('app_version')
        batch.drop_column('manifest_key')
