"""PostgreSQL restarts while requests run: the API says it is not ready, recovers by itself,
and no acknowledged write is lost.

The API (``questline serve`` with two processes) runs on a PostgreSQL of the test's own (a
pgserver instance in a temporary folder, Unix socket only). Four clients send ``grantPoints``
with fresh idempotency keys without pause. Midway, PostgreSQL is stopped in ``immediate`` mode
(no shutdown checkpoint, like a crash: the restart replays the WAL) and started again a couple
of seconds later; the API is not touched.

- While PostgreSQL is down ``/readyz`` answers 503 naming PostgreSQL (not Redis), and the
  failing requests get a GraphQL error with a message (no HTTP 500, no stack trace).
- Once it is back ``/readyz`` answers 200 and grants succeed again in the same processes.
- Every grant that was acknowledged (a transaction id and no errors) is in the database, and
  ``ledger verify`` passes on it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from ledger.verify import verify_database_url
from server.db import plain_dsn
from server.migrate import upgrade_head
from tests.api import admin_token
from tests.faults.conftest import api_process

CLIENTS = 4
DOWN_SECONDS = 2.0
RECOVERY_TIMEOUT = 30.0
GRANTS_AFTER_RECOVERY = 20
LEAK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
GRANT = """mutation($input: GrantPointsInput!) { grantPoints(input: $input) {
  transaction { id } errors { code message } } }"""


@dataclass
class PgServer:
    handle: Any  # pgserver.PostgresServer (untyped)
    database_url: str

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: every backend quits at once, no checkpoint."""
        from pgserver._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(self.handle.pgdata),
                "-w",
                "-m",
                "immediate",
                "stop",
            ],
            user=self.handle.system_user,  # PostgreSQL's own user when we are root
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self) -> None:
        """Start it again with pgserver's own options (same data folder, same socket)."""
        self.handle.ensure_postgres_running()


@pytest.fixture
def own_postgres(workdir: Path) -> Iterator[PgServer]:
    import pgserver

    pgdata = workdir / "pg"
    handle = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        handle.psql("CREATE DATABASE questline;")
        uri = make_url(handle.get_uri("questline")).set(drivername="postgresql+asyncpg")
        url = uri.render_as_string(hide_password=False)
        upgrade_head(url)
        yield PgServer(handle, url)
    finally:
        handle.cleanup()


@dataclass
class Traffic:
    """What the clients saw."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a GraphQL error, as expected when down
    transport_errors: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    reads_ok: int = 0  # reads answered with data (the API's plain asyncpg read pool)
    reads_refused: int = 0


async def client(http: httpx.AsyncClient, token: str, traffic: Traffic, stop: asyncio.Event):
    while not stop.is_set():
        key = f"restart-{next(traffic.serial)}"
        variables = {
            "input": {
                "externalId": "pg-alice",
                "amount": 5,
                "reason": "load",
                "idempotencyKey": key,
            }
        }
        try:
            response = await http.post(
                "/graphql",
                json={"query": GRANT, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as error:
            traffic.transport_errors.append(f"{key}: {type(error).__name__}")
            await asyncio.sleep(0.05)
            continue
        traffic.statuses[response.status_code] = traffic.statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        assert not LEAK.search(response.text), response.text
        body = response.json()
        payload = (body.get("data") or {}).get("grantPoints")
        if payload and payload["transaction"] and not payload["errors"] and not body.get("errors"):
            traffic.acknowledged.append(key)
        else:
            errors = body.get("errors") or (payload or {}).get("errors") or []
            assert errors and all(e.get("message") for e in errors), body
            # a client can tell "retry later" from a bug: the outage has its own code
            codes = {(e.get("extensions") or {}).get("code") or e.get("code") for e in errors}
            assert codes == {"UNAVAILABLE"}, body
            traffic.refused.append(key)
            await asyncio.sleep(0.05)  # a real client backs off too


READ = '{ member(externalId: "pg-alice") { externalId balance } }'


async def reader(http: httpx.AsyncClient, token: str, traffic: Traffic, stop: asyncio.Event):
    """Reads through the API's read pool: UNAVAILABLE while the database is down (never a
    500 or a stack trace), answers again once it is back."""
    while not stop.is_set():
        try:
            response = await http.post(
                "/graphql", json={"query": READ}, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError:
            await asyncio.sleep(0.05)
            continue
        assert response.status_code < 500, response.text
        assert not LEAK.search(response.text), response.text
        body = response.json()
        if (body.get("data") or {}).get("member") and not body.get("errors"):
            traffic.reads_ok += 1
        else:
            codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
            assert codes == {"UNAVAILABLE"}, body
            traffic.reads_refused += 1
            await asyncio.sleep(0.05)


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/readyz")
    return response.status_code, response.json()


async def wait_until(what: str, check: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
async def test_api_recovers_from_a_postgres_restart_without_losing_acknowledged_writes(
    own_postgres: PgServer, workdir: Path
) -> None:
    token = admin_token(ttl_seconds=600)
    with api_process(workdir, workers=2, QUESTLINE_DATABASE_URL=own_postgres.database_url) as base:
        timeout = httpx.Timeout(10.0)
        async with httpx.AsyncClient(base_url=base, timeout=timeout) as http:
            registered = await http.post(
                "/graphql",
                json={
                    "query": 'mutation { registerMember(input: {externalId: "pg-alice"}) {'
                    " errors { code } } }"
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert registered.json()["data"]["registerMember"]["errors"] == []

            traffic = Traffic()
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(client(http, token, traffic, stop)) for _ in range(CLIENTS)
            ] + [asyncio.create_task(reader(http, token, traffic, stop)) for _ in range(2)]
            try:
                await wait_until("grants before the restart", _count(traffic, 20), 20)
                before_restart = len(traffic.acknowledged)

                await asyncio.to_thread(own_postgres.stop)

                async def reports_postgres_down() -> bool:
                    status, body = await readiness(http)
                    problems = body.get("problems", {})
                    return status == 503 and "postgres" in problems and "redis" not in problems

                await wait_until("/readyz to report PostgreSQL down", reports_postgres_down, 10)
                down_since = len(traffic.refused)
                await asyncio.sleep(DOWN_SECONDS)
                assert len(traffic.refused) > down_since, "no request failed while it was down"
                acknowledged_while_down = len(traffic.acknowledged)

                await asyncio.to_thread(own_postgres.start)

                async def ready_again() -> bool:
                    return (await readiness(http))[0] == 200

                await wait_until("/readyz to answer 200 again", ready_again, RECOVERY_TIMEOUT)
                await wait_until(
                    "grants to succeed again",
                    _count(traffic, acknowledged_while_down + GRANTS_AFTER_RECOVERY),
                    RECOVERY_TIMEOUT,
                )
                reads_after_recovery = traffic.reads_ok

                async def reads_answer_again() -> bool:
                    return traffic.reads_ok >= reads_after_recovery + 10

                await wait_until("reads to succeed again", reads_answer_again, RECOVERY_TIMEOUT)
            finally:
                stop.set()
                await asyncio.gather(*clients)

    assert before_restart >= 20
    assert traffic.reads_refused > 0, "no read failed while the database was down"
    stored = await stored_keys(own_postgres.database_url, traffic.acknowledged)
    lost = sorted(set(traffic.acknowledged) - stored)
    assert not lost, f"acknowledged grants missing after the restart: {lost}"
    report = await verify_database_url(own_postgres.database_url)
    assert report.ok, report.render()


def _count(traffic: Traffic, at_least: int) -> Any:
    async def check() -> bool:
        return len(traffic.acknowledged) >= at_least

    return check


async def stored_keys(database_url: str, keys: list[str]) -> set[str]:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT idempotency_key FROM transactions WHERE idempotency_key = ANY($1::text[])",
            keys,
        )
        return {r["idempotency_key"] for r in rows}
    finally:
        await conn.close()
