"""index on flow and created_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 19:00:00.000000
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the flows page reads the last day of each flow (RunStore.flow_stats)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_flow_created', ['flow_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_flow_created')
