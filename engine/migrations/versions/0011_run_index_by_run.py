"""run_index entries ordered by run

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 01:45:00.000000

ix_run_index_name_value gains run_id: a search reads its matches newest first straight from the index,
and the flow page counts the markers of index fields that resolved to nothing (value '') within the
last 24 h as one index range (web.context, "silent misconfiguration").
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_run_index_name_value', table_name='run_index')
    op.create_index('ix_run_index_name_value', 'run_index', ['name', 'value', 'run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_run_index_name_value', table_name='run_index')
    op.create_index('ix_run_index_name_value', 'run_index', ['name', 'value'], unique=False)
