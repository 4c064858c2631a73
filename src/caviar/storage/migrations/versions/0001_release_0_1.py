"""The schema of caviar 0.1: studies, trials, curves, boxes, events, artifacts and caviar_meta.

A database made by 0.1 has exactly these tables (and no version table): caviar stamps it 0001
instead of running this. Revision ID: 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.Integer
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    meta = op.create_table(
        "caviar_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "caviar_studies",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "caviar_trials",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("unit", sa.Text),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("group_key", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(255)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS),
        sa.Column("started_at", _TS),
        sa.Column("finished_at", _TS),
        sa.Column("duration", sa.Float),
        sa.Column("metrics", sa.Text),
        sa.Column("objective", sa.Float),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("study_id", "number", name="uq_caviar_trials_number"),
        sa.Index("ix_caviar_trials_state", "study_id", "state"),
    )
    op.create_table(
        "caviar_curves",
        sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("train_loss", sa.Float),
        sa.Column("train_accuracy", sa.Float),
        sa.Column("val_loss", sa.Float),
        sa.Column("val_accuracy", sa.Float),
        sa.Column("extra", sa.Text),
    )
    op.create_table(
        "caviar_boxes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("box", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("study_id", "round", name="uq_caviar_boxes_round"),
    )
    op.create_table(
        "caviar_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
        sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id")),
        sa.Column("step", sa.Integer),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Index("ix_caviar_events_study", "study_id", "id"),
    )
    op.create_table(
        "caviar_artifacts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("trial_id", "name", name="uq_caviar_artifacts_name"),
    )
    op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    for name in (
        "caviar_artifacts",
        "caviar_events",
        "caviar_boxes",
        "caviar_curves",
        "caviar_trials",
        "caviar_studies",
        "caviar_meta",
    ):
        op.drop_table(name)
