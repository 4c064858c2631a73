"""Alembic's environment for caviar: migrations always run on the connection caviar hands over.

``caviar.storage.migrate`` opens the transaction (holding the SQLite write lock or the PostgreSQL
advisory lock), puts the connection in ``config.attributes["connection"]`` and calls alembic's
``command.upgrade``/``command.stamp``; everything happens inside that one transaction.
"""

from __future__ import annotations

from alembic import context

from caviar.storage.migrate import VERSION_TABLE
from caviar.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("caviar's migrations run through caviar.storage.migrate, on the connection it passes in")
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
