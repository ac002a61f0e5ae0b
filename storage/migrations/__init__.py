"""Alembic migrations of the Forager store, configured in code (there is no ``alembic.ini``).

``storage.Store`` runs them: a new database is created by upgrading it from nothing to the latest
revision, so the scripts in ``versions/`` are the one definition of the schema. They must produce exactly
``storage.models.Base.metadata`` (a test compares them).

To change the schema, edit the models, then generate a revision against a database at the current head
and tidy it by hand (revision ids are sequential: ``0002``, ``0003`` ...)::

    from alembic import command
    from storage import Store
    from storage.migrations import alembic_config

    store = Store("sqlite:///scratch.db")
    with store.session() as session:
        config = alembic_config(session.connection())
        command.revision(config, "what changed", autogenerate=True, rev_id="0002")

Use batch operations (``with op.batch_alter_table(...)``) so that the revision also runs on SQLite.
"""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

SCRIPT_LOCATION = "storage:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for Forager's migrations, running on ``connection`` (``env.py`` reads it).

    Without a connection it can only be used to read the scripts, as ``script_directory`` does.
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    """The migration scripts shipped with this Forager."""
    return ScriptDirectory.from_config(alembic_config())
