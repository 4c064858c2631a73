"""Alembic migrations of caviar's schema; caviar.storage.migrate runs them on a connection it passes in.

``versions/`` holds one revision per schema change, numbered 0001, 0002, ... (each a frozen snapshot:
it never imports caviar.storage.schema, which describes the head). No alembic.ini is needed.
"""
