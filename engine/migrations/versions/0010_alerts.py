"""alerts

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 01:30:00.000000

HOOKLINE_ALERT_URL's decisions, shared by every worker (engine.store.alerts): one row per run that
failed for good (claimed once, so a resumed run never alerts twice) and one per flow (its rate limit).
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'alert_runs',
        sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
        sa.Column('flow_id', sa.String(length=100), nullable=False),
        sa.Column('decided_at', sa.Float(), nullable=False),
        sa.Column('sent', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id'),
    )
    op.create_table(
        'alert_flows',
        sa.Column('flow_id', sa.String(length=100), nullable=False),
        sa.Column('last_sent_at', sa.Float(), nullable=True),
        sa.Column('suppressed', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('flow_id'),
    )


def downgrade() -> None:
    op.drop_table('alert_flows')
    op.drop_table('alert_runs')
