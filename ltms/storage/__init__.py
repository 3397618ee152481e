"""The durable source of truth: SQLite in WAL mode."""
