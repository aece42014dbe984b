"""The hand-written migration creates exactly what the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from server.all_models import metadata
from server.runtime import Runtime

LEDGER_TABLES = {
    "currencies",
    "accounts",
    "transactions",
    "postings",
    "lots",
    "lot_allocations",
    "pending_credits",
}


def _tables_named(diff: Any) -> set[str]:
    """Every table name a compare_metadata diff entry mentions."""
    names: set[str] = set()
    entries = diff if isinstance(diff, list) else [diff]
    for entry in entries:
        for part in entry[1:]:
            if isinstance(part, str):
                names.add(part)
            for attr in ("name", "table"):
                value = getattr(part, attr, None)
                if isinstance(value, str):
                    names.add(value)
                elif value is not None and isinstance(getattr(value, "name", None), str):
                    names.add(value.name)
    return names


async def test_migrated_schema_matches_models(runtime: Runtime) -> None:
    async with runtime.engine.connect() as connection:
        diffs = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), metadata
            )
        )
    ledger = [d for d in diffs if _tables_named(d) & LEDGER_TABLES]
    assert ledger == []


async def test_reference_data_is_seeded(runtime: Runtime) -> None:
    async with runtime.transaction() as session:
        currencies = (await session.execute(text("SELECT key FROM currencies ORDER BY key"))).all()
        system = (
            await session.execute(text("SELECT count(*) FROM accounts WHERE member_id IS NULL"))
        ).scalar_one()
    assert [c[0] for c in currencies] == ["points", "xp"]
    assert system == 8  # issuance, redemptions, expired, adjustments per currency
