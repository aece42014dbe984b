"""Calling the ledger's SQL functions with as little client work as possible.

Every value-moving operation is ONE call of a PL/pgSQL function (migration 0002), so ONE
round trip inside the caller's transaction. It is sent on the session's own asyncpg
connection (``driver_connection``), still inside the session's transaction, because the
SQLAlchemy statement layer costs more client CPU than the whole database side of a grant
(measured: ~60-120 us of Python per ``session.execute`` against ~115 us of database CPU per
grant, see bench/ledger.py). asyncpg caches the prepared statement per connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledger.errors import CONFLICT, INVALID_INPUT, LedgerError
from server.errors import violates_unique
from server.rawsql import driver

MAX_AMOUNT = 1_000_000_000
MAX_KEY_LENGTH = 255
IDEMPOTENCY_INDEX = "uq_transactions_idempotency_key"


async def fetchrow(session: AsyncSession, sql: str, *args: Any) -> Any:
    """One row (an ``asyncpg.Record``) of ``sql``."""
    conn = await driver(session)
    try:
        return await conn.fetchrow(sql, *args)
    except Exception as error:
        _translate(error)
        raise


async def fetch(session: AsyncSession, sql: str, *args: Any) -> list[Any]:
    conn = await driver(session)
    try:
        return list(await conn.fetch(sql, *args))
    except Exception as error:
        _translate(error)
        raise


def _translate(error: Exception) -> None:
    """A concurrent request that committed one of our idempotency keys first (only possible
    for ``post_batch``, whose plain INSERT then fails) becomes a LedgerError; the database
    transaction is aborted and must be rolled back (a retry then replays or conflicts)."""
    if violates_unique(error, IDEMPOTENCY_INDEX):
        raise LedgerError(
            CONFLICT,
            "a concurrent request used one of these idempotency keys; retry",
            "idempotencyKey",
            aborted=True,
        ) from error


def input_hash(operation: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 of the operation and its input, canonical JSON; stored next to the key."""
    payload = json.dumps(
        [operation, fields], sort_keys=True, separators=(",", ":"), default=_json_default
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_amount(amount: object, field: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise LedgerError(INVALID_INPUT, "amount must be a whole number", field)
    if amount <= 0 or amount > MAX_AMOUNT:
        raise LedgerError(INVALID_INPUT, "amount must be between 1 and 1,000,000,000", field)
    return amount


def check_key(key: object, field: str = "idempotencyKey") -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise LedgerError(INVALID_INPUT, "idempotencyKey must be 1 to 255 characters", field)
    return key


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not 1 <= len(currency) <= 32:
        raise LedgerError(INVALID_INPUT, "unknown currency", "currency")
    return currency


def check_days(days: int | None, field: str) -> int | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= 36_500:
        raise LedgerError(INVALID_INPUT, f"{field} must be between 1 and 36500 days", field)
    return days


def aware(moment: datetime | None, field: str = "expiresAt") -> datetime | None:
    """Timestamps must say their zone; a naive one is read as UTC."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise LedgerError(INVALID_INPUT, f"{field} must be a date and time", field)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def metadata_json(metadata: Mapping[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    try:
        return json.dumps(dict(metadata), default=_json_default)
    except (TypeError, ValueError) as error:
        raise LedgerError(INVALID_INPUT, "metadata must be JSON", "metadata") from error
