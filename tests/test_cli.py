"""The ``questline`` command: first line, tokens, API keys, migrations, demo data."""

from __future__ import annotations

import asyncio
import importlib.util
import re

import asyncpg
import pytest
from typer.testing import CliRunner

from server.auth import Role, decode_token, principal_for_api_key
from server.cli import app, describe
from server.demo import DEMO_GRANTS, DEMO_MEMBERS, DEMO_TIERS
from server.runtime import Runtime
from server.settings import Settings, get_settings
from tests.support import plain_dsn

runner = CliRunner()

CONFIGURED = "Questline: using the configured PostgreSQL and Redis."


def first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in (
        "dev",
        "serve",
        "worker",
        "scheduler",
        "migrate",
        "seed-demo",
        "token",
        "apikey",
        "ledger",
    ):
        assert command in result.output


def test_the_first_line_says_which_servers_are_used() -> None:
    embedded = Settings(database_url=None, redis_url=None)
    assert "EMBEDDED" in describe(embedded) and "PostgreSQL and Redis" in describe(embedded)
    half = Settings(database_url="postgresql://db/x", redis_url=None)
    assert "EMBEDDED development Redis" in describe(half)
    configured = Settings(database_url="postgresql://db/x", redis_url="redis://r")
    assert describe(configured) == CONFIGURED


def test_admin_token(settings: Settings) -> None:
    result = runner.invoke(app, ["token", "--admin"])
    assert result.exit_code == 0, result.output
    assert first_line(result.stderr) == CONFIGURED
    token = result.stdout.strip()
    assert decode_token(get_settings(), token).role is Role.ADMIN


def test_member_token(settings: Settings) -> None:
    result = runner.invoke(app, ["token", "--member", "alice", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    principal = decode_token(get_settings(), result.stdout.strip())
    assert principal.role is Role.MEMBER and principal.external_id == "alice"


@pytest.mark.parametrize("args", [[], ["--admin", "--member", "alice"]])
def test_token_needs_exactly_one_kind(args: list[str]) -> None:
    result = runner.invoke(app, ["token", *args])
    assert result.exit_code == 2
    assert "exactly one" in result.stderr


async def test_apikey_create_prints_a_working_key_once(runtime: Runtime) -> None:
    # The command runs its own event loop, so it runs in a thread here.
    result = await asyncio.to_thread(
        runner.invoke, app, ["apikey", "create", "--name", "checkout", "--scope", "events"]
    )
    assert result.exit_code == 0, result.output
    assert first_line(result.stderr) == CONFIGURED
    key = result.stdout.strip()
    assert key.startswith("ql_") and "\n" not in key
    async with runtime.sessionmaker() as session:
        principal = await principal_for_api_key(session, key)
    assert principal.role is Role.EVENTS and principal.key_name == "checkout"


def test_apikey_create_refuses_an_unknown_scope() -> None:
    result = runner.invoke(app, ["apikey", "create", "--name", "x", "--scope", "root"])
    assert result.exit_code == 2


def test_migrate_is_idempotent(database_url: str) -> None:
    for _ in range(2):
        result = runner.invoke(app, ["migrate"])
        assert result.exit_code == 0, result.output
        assert first_line(result.stderr) == CONFIGURED
        assert "up to date" in result.stdout


def seed_report(stdout: str) -> dict[str, int]:
    """``Demo program loaded (created tiers: 3, members: 6, ledger: 10).`` as a dict."""
    match = re.search(r"created (.*)\)", stdout)
    assert match, stdout
    return {
        name: int(count)
        for name, count in (part.split(": ") for part in match.group(1).split(", "))
    }


def test_seed_demo_twice_creates_nothing_twice(database_url: str) -> None:
    first = runner.invoke(app, ["seed-demo"])
    assert first.exit_code == 0, first.output
    created = seed_report(first.stdout)
    assert created["members"] == len(DEMO_MEMBERS)
    if importlib.util.find_spec("ledger.service"):
        assert created["ledger"] == len(DEMO_GRANTS)
    if importlib.util.find_spec("members.tiers"):
        assert created["tiers"] == len(DEMO_TIERS)

    second = runner.invoke(app, ["seed-demo"])
    assert second.exit_code == 0, second.output
    assert set(seed_report(second.stdout).values()) == {0}

    async def members() -> list[tuple[str, str | None]]:
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            rows = await conn.fetch(
                "SELECT m.external_id, r.external_id AS referrer FROM members m "
                "LEFT JOIN members r ON r.id = m.referred_by_id ORDER BY m.id"
            )
        finally:
            await conn.close()
        return [(row["external_id"], row["referrer"]) for row in rows]

    rows = asyncio.run(members())
    assert len(rows) == len(DEMO_MEMBERS)
    assert ("bob", "alice") in rows


def test_ledger_verify_runs_on_the_resolved_database(database_url: str) -> None:
    result = runner.invoke(app, ["ledger", "--help"])
    assert result.exit_code == 0, result.output
    assert "verify" in result.output
    if not importlib.util.find_spec("ledger.cli"):
        pytest.skip("the ledger has no CLI yet")
    assert runner.invoke(app, ["seed-demo"]).exit_code == 0  # something to verify
    result = runner.invoke(app, ["ledger", "verify"])
    assert result.exit_code == 0, result.output
    assert first_line(result.stderr) == CONFIGURED
