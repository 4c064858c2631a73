"""The revisions, oldest first: 0001 is the 0.1 schema."""
