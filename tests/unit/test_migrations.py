"""The Alembic migrations build exactly the schema the models describe.

Several people add tables and columns at once; a model change without its migration
works in a test that creates tables from the models but breaks every real database
that is upgraded instead. This compares the migrated schema with the models.
"""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from farmhand.manager.db.engine import make_engine
from farmhand.manager.db.migrate import alembic_config, upgrade
from farmhand.manager.db.models import Base


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"the migrations branch: heads {heads}; chain them one after another"


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == [], f"models and migrations disagree: {differences}"
