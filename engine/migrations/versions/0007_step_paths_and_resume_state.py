"""step paths and resume state

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 20:10:00.000000

A step's identity is its path (``lines[3].decrement``), not its id: the column is renamed and widened,
and the unique key follows it. ``state`` holds what a resumed run continues from (complete, secrets
sealed as references, never shown); the other columns stay the redacted, capped audit record.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('step_runs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_step_runs_attempt', type_='unique')
        batch_op.alter_column('step_id', new_column_name='path', existing_type=sa.String(length=100),
                              type_=sa.String(length=500), existing_nullable=False)
        batch_op.add_column(sa.Column('state', sa.JSON(), nullable=True))
    with op.batch_alter_table('step_runs', schema=None) as batch_op:  # SQLite: the new name exists only now
        batch_op.create_unique_constraint('uq_step_runs_attempt', ['run_id', 'path', 'attempt'])
    _backfill_state()


def _backfill_state() -> None:
    """Runs that may still resume (unfinished, or failed and retryable from their failed step) keep their
    done steps done (I5): their recorded output becomes their state, which is what resumed them before."""
    bind = op.get_bind()
    steps = sa.table('step_runs', sa.column('id', sa.Integer), sa.column('run_id', sa.Integer),
                     sa.column('status', sa.String), sa.column('output', sa.JSON), sa.column('state', sa.JSON))
    runs = sa.table('runs', sa.column('id', sa.Integer), sa.column('status', sa.String))
    resumable = sa.select(runs.c.id).where(runs.c.status.in_(['queued', 'running', 'waiting', 'failed']))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(steps.c.id, steps.c.status, steps.c.output)
            .where(steps.c.id > last, steps.c.status.in_(['succeeded', 'skipped']), steps.c.run_id.in_(resumable))
            .order_by(steps.c.id).limit(1000)).all()
        if not rows:
            return
        for row in rows:
            state = {'status': row.status} if row.status == 'skipped' else {'status': 'succeeded', 'output': row.output}
            bind.execute(steps.update().where(steps.c.id == row.id).values(state=state))
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table('step_runs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_step_runs_attempt', type_='unique')
        batch_op.drop_column('state')
        batch_op.alter_column('path', new_column_name='step_id', existing_type=sa.String(length=500),
                              type_=sa.String(length=100), existing_nullable=False)
    with op.batch_alter_table('step_runs', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_step_runs_attempt', ['run_id', 'step_id', 'attempt'])
