"""Studies get a kind ('study', or 'session' for a panda's) and the fingerprint of their data.

``caviar_meta.schema_version`` becomes 2, so caviar 0.1 refuses the migrated file ("upgrade caviar")
instead of writing to a schema it does not know. Revision ID: 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_meta = sa.table("caviar_meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.add_column("caviar_studies", sa.Column("kind", sa.String(32), nullable=False, server_default="study"))
    op.add_column("caviar_studies", sa.Column("fingerprint", sa.Text, nullable=True))
    op.execute(_meta.update().where(_meta.c.key == "schema_version").values(value="2"))


def downgrade() -> None:
    with op.batch_alter_table("caviar_studies") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("fingerprint")
        batch.drop_column("kind")
    op.execute(_meta.update().where(_meta.c.key == "schema_version").values(value="1"))
