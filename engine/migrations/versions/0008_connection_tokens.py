"""connection tokens

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:30:00.000000

The connections' OAuth2 access tokens and rotated refresh tokens (encrypted), shared by every
worker, with the lease that lets one worker at a time refresh them (engine.connection_store).
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'connection_tokens',
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('access_token', sa.Text(), nullable=True),
        sa.Column('refresh_token', sa.Text(), nullable=True),
        sa.Column('seed', sa.String(length=64), nullable=True),
        sa.Column('refresh_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=True),
        sa.Column('generation', sa.Integer(), nullable=False),
        sa.Column('lease_owner', sa.String(length=100), nullable=True),
        sa.Column('lease_until', sa.Float(), nullable=False),
        sa.Column('refreshed_at', sa.Float(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('error_retryable', sa.Boolean(), nullable=False),
        sa.Column('error_at', sa.Float(), nullable=True),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('connection_tokens')
