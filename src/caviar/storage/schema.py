"""The tables, as the newest migration leaves them (SQLAlchemy Core).

The tables carry a ``caviar_`` prefix so they can share a database with other things. This module
describes the head schema for queries and creates a new database's tables (``migrate.create_at_head``);
the migrations (``caviar.storage.migrations``) change an older database's tables, and a test checks
that they arrive at exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["CURVE_COLUMNS", "artifacts", "boxes", "curves", "events", "meta", "metadata", "studies", "trials"]

#: The per-epoch values that have their own column; anything else in a curve row goes to ``extra``.
CURVE_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")

metadata = sa.MetaData()
_ID = sa.Integer
_TS = sa.DateTime(timezone=True)

meta = sa.Table(
    "caviar_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
studies = sa.Table(
    "caviar_studies",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger),
    sa.Column("metric", sa.String(128), nullable=False),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, server_default="study"),  # 0002: 'session' for a panda
    sa.Column("fingerprint", sa.Text),  # 0002: the content hash of the study's data
)
trials = sa.Table(
    "caviar_trials",
    metadata,
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
curves = sa.Table(
    "caviar_curves",
    metadata,
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    *(sa.Column(name, sa.Float) for name in CURVE_COLUMNS),
    sa.Column("extra", sa.Text),
)
boxes = sa.Table(
    "caviar_boxes",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("box", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("study_id", "round", name="uq_caviar_boxes_round"),
)
events = sa.Table(
    "caviar_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("study_id", _ID, sa.ForeignKey("caviar_studies.id"), nullable=False),
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id")),
    sa.Column("step", sa.Integer),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Index("ix_caviar_events_study", "study_id", "id"),
)
artifacts = sa.Table(
    "caviar_artifacts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("trial_id", _ID, sa.ForeignKey("caviar_trials.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.UniqueConstraint("trial_id", "name", name="uq_caviar_artifacts_name"),
)
