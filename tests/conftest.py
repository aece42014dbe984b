"""Test infrastructure: a fresh PostgreSQL database migrated with Alembic, a real Redis.

``QUESTLINE_TEST_DATABASE_URL`` / ``QUESTLINE_TEST_REDIS_URL`` point at real servers (CI sets
them); without them the embedded servers are started in a temporary folder. Each test session
creates its own database (and drops only that one), each test starts from empty tables, and the
ledger is verified after every test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from server.settings import Settings

_TMP = Path(tempfile.mkdtemp(prefix="questline-test-"))


def _admin_dsn(url: str) -> str:
    """A plain asyncpg DSN for the maintenance database of the server in ``url``."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def _resolve_test_servers() -> tuple[str, str]:
    db_url = os.environ.get("QUESTLINE_TEST_DATABASE_URL")
    redis_url = os.environ.get("QUESTLINE_TEST_REDIS_URL")
    if db_url and redis_url:
        return db_url, redis_url
    from server.embedded import resolve_services

    settings = Settings(
        database_url=db_url, redis_url=redis_url, broker_url=None, data_dir=_TMP / "embedded"
    )
    urls = resolve_services(settings)
    return urls.database_url, urls.redis_url


SERVER_DB_URL, TEST_REDIS_URL = _resolve_test_servers()
TEST_DB_NAME = f"questline_test_{os.getpid()}_{secrets.token_hex(3)}"
TEST_DB_URL = (
    make_url(SERVER_DB_URL)
    .set(drivername="postgresql+asyncpg", database=TEST_DB_NAME)
    .render_as_string(hide_password=False)
)

# Every process started by the tests (and every settings object) uses the test servers.
os.environ["QUESTLINE_DATABASE_URL"] = TEST_DB_URL
os.environ["QUESTLINE_REDIS_URL"] = TEST_REDIS_URL
os.environ["QUESTLINE_BROKER_URL"] = TEST_REDIS_URL
os.environ.setdefault("QUESTLINE_JWT_SECRET", "test-secret-" + secrets.token_hex(16))
os.environ["QUESTLINE_DATA_DIR"] = str(_TMP / "data")
# The webhook tests' receivers run on 127.0.0.1; tests/webhooks/test_addresses.py checks the
# production default (private addresses refused) with settings of its own.
os.environ["QUESTLINE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES"] = "true"


async def _create_database() -> None:
    conn = await asyncpg.connect(_admin_dsn(SERVER_DB_URL))
    try:
        await conn.execute(f'CREATE DATABASE "{TEST_DB_NAME}"')
    finally:
        await conn.close()


async def _drop_database() -> None:
    conn = await asyncpg.connect(_admin_dsn(SERVER_DB_URL))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB_NAME}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from server.migrate import upgrade_head

    asyncio.run(_create_database())
    upgrade_head(TEST_DB_URL)
    yield TEST_DB_URL
    asyncio.run(_drop_database())


@pytest.fixture(scope="session")
def redis_url() -> str:
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    from server.settings import get_settings

    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
async def runtime(settings: Settings) -> AsyncIterator[object]:
    from server.runtime import Runtime

    rt = await Runtime.start(settings)
    yield rt
    await rt.close()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty tables and Redis before each test; verify the ledger after it."""
    if "database_url" not in request.fixturenames and "runtime" not in request.fixturenames:
        yield
        return
    from tests.support import reset_database, reset_redis, verify_ledger

    await reset_database(TEST_DB_URL)
    await reset_redis(TEST_REDIS_URL)
    yield
    await verify_ledger(TEST_DB_URL)


@pytest.fixture
async def app(runtime: object) -> object:
    from server.app import create_app

    return create_app(runtime=runtime)  # type: ignore[arg-type]


@pytest.fixture
async def api(app: object) -> AsyncIterator[object]:
    """A GraphQL client over the ASGI app, as a client application would call it."""
    import httpx

    from tests.api import GraphQLClient

    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://questline.test") as http:
        yield GraphQLClient(http)
