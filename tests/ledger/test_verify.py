"""Verification finds broken invariants (and the CLI exits non-zero on them)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from ledger import service
from ledger.verify import verify_database_url
from server.runtime import Runtime
from tests.ledger.conftest import create_members, run

CORRUPTIONS = {
    "stored_balance": "UPDATE accounts SET balance = balance + 1 WHERE member_id IS NOT NULL",
    "lots_vs_balance": "UPDATE lots SET remaining = remaining - 1, expired = expired + 1",
    "unbalanced": "UPDATE postings SET amount = amount + 1 WHERE amount > 0",
    "too_few_postings": "DELETE FROM postings WHERE amount < 0",
    "lot_arithmetic": "UPDATE lots SET amount = amount + 1",
    "orphan_postings": "UPDATE postings SET account_id = 987654 WHERE amount < 0",
    "negative_balance": "ALTER TABLE accounts DROP CONSTRAINT ck_accounts_balance_non_negative;"
    " UPDATE accounts SET balance = -5 WHERE member_id IS NOT NULL",
}


async def _corrupt(runtime: Runtime, sql: str) -> None:
    async with runtime.transaction() as session:
        for statement in sql.split(";"):
            await session.execute(text(statement))


@pytest.mark.parametrize("check", sorted(CORRUPTIONS))
async def test_verify_reports_a_broken_invariant(
    runtime: Runtime, database_url: str, check: str
) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="g"))
    assert (await verify_database_url(database_url)).ok
    await _corrupt(runtime, CORRUPTIONS[check])
    report = await verify_database_url(database_url)
    assert not report.ok
    assert check in {v.check for v in report.violations}, report.render()
    assert check in report.render()
    # repair, so the fixture's own verification after the test passes
    await _corrupt(
        runtime,
        "TRUNCATE transactions, postings, lots, lot_allocations, accounts"
        " CASCADE; SELECT questline_seed_reference_data()",
    )
    if check == "negative_balance":
        await _corrupt(
            runtime,
            "ALTER TABLE accounts ADD CONSTRAINT"
            " ck_accounts_balance_non_negative CHECK (allow_negative OR balance >= 0)",
        )


def test_cli_verify_exit_codes(database_url: str) -> None:
    import asyncio

    import asyncpg

    from ledger.cli import app
    from tests.support import plain_dsn

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    result = CliRunner().invoke(app, ["verify", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("OK")
    # a bounded account whose stored balance no posting explains
    asyncio.run(
        execute(
            "INSERT INTO accounts (key, currency, kind, balance) VALUES ('x', 'points', 'x', 3)"
        )
    )
    result = CliRunner().invoke(app, ["verify", "--no-progress"])
    assert result.exit_code == 1
    assert "stored_balance" in result.output
    asyncio.run(execute("DELETE FROM accounts WHERE key = 'x'"))
