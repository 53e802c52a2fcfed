"""Database: typed models, engine setup, Alembic migrations (MySQL/MariaDB and SQLite)."""
