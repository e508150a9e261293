"""Run Alembic migrations with the app's database URL."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

#: package data (pyproject.toml), a directory on disk in a checkout and in an installed wheel
MIGRATIONS = files("newsletter") / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision``."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
