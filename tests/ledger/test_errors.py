"""Bad input: each case is a coded LedgerError, and the ledger writes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from ledger import service
from ledger.errors import LedgerError
from server.runtime import Runtime
from tests.ledger.conftest import create_members, row_counts, run

Op = Callable[[AsyncSession, int, int], Awaitable[Any]]

CASES: list[tuple[str, Op, str, str]] = [
    (
        "zero",
        lambda s, m, o: service.grant(s, m, 0, idempotency_key="z"),
        "INVALID_INPUT",
        "amount",
    ),
    (
        "negative",
        lambda s, m, o: service.spend(s, m, -5, idempotency_key="n"),
        "INVALID_INPUT",
        "amount",
    ),
    (
        "oversized",
        lambda s, m, o: service.grant(s, m, 1_000_000_001, idempotency_key="o"),
        "INVALID_INPUT",
        "amount",
    ),
    (
        "not an int",
        lambda s, m, o: service.grant(s, m, 1.5, idempotency_key="f"),  # type: ignore[arg-type]
        "INVALID_INPUT",
        "amount",
    ),
    (
        "empty key",
        lambda s, m, o: service.grant(s, m, 5, idempotency_key=""),
        "INVALID_INPUT",
        "idempotencyKey",
    ),
    (
        "long key",
        lambda s, m, o: service.grant(s, m, 5, idempotency_key="k" * 256),
        "INVALID_INPUT",
        "idempotencyKey",
    ),
    (
        "unknown currency",
        lambda s, m, o: service.grant(s, m, 5, idempotency_key="c", currency="gold"),
        "INVALID_INPUT",
        "currency",
    ),
    (
        "unknown member grant",
        lambda s, m, o: service.grant(s, 999_999, 5, idempotency_key="u"),
        "NOT_FOUND",
        "memberId",
    ),
    (
        "unknown member spend",
        lambda s, m, o: service.spend(s, 999_999, 5, idempotency_key="u"),
        "NOT_FOUND",
        "memberId",
    ),
    (
        "unknown receiver",
        lambda s, m, o: service.transfer(s, m, 999_999, 5, idempotency_key="r"),
        "NOT_FOUND",
        "toMemberId",
    ),
    (
        "self transfer",
        lambda s, m, o: service.transfer(s, m, m, 5, idempotency_key="self"),
        "INVALID_INPUT",
        "toMemberId",
    ),
    (
        "spend xp",
        lambda s, m, o: service.spend(s, m, 5, idempotency_key="x", currency="xp"),
        "INVALID_INPUT",
        "currency",
    ),
    (
        "expiry in the past",
        lambda s, m, o: service.grant(
            s, m, 5, idempotency_key="p", expires_at=datetime.now(UTC) - timedelta(days=1)
        ),
        "INVALID_INPUT",
        "expiresAt",
    ),
    (
        "expiry on xp",
        lambda s, m, o: service.grant(
            s,
            m,
            5,
            idempotency_key="xe",
            currency="xp",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        ),
        "INVALID_INPUT",
        "expiresAt",
    ),
    (
        "overspend",
        lambda s, m, o: service.spend(s, m, 101, idempotency_key="big"),
        "INSUFFICIENT_FUNDS",
        "amount",
    ),
    (
        "overspend, never credited",
        lambda s, m, o: service.spend(s, o, 1, idempotency_key="e"),
        "INSUFFICIENT_FUNDS",
        "amount",
    ),
    (
        "overtransfer",
        lambda s, m, o: service.transfer(s, m, o, 101, idempotency_key="bt"),
        "INSUFFICIENT_FUNDS",
        "amount",
    ),
    (
        "key reused, other input",
        lambda s, m, o: service.grant(s, m, 99, idempotency_key="seed"),
        "IDEMPOTENCY_CONFLICT",
        "idempotencyKey",
    ),
    (
        "key reused by another op",
        lambda s, m, o: service.spend(s, m, 100, idempotency_key="seed"),
        "IDEMPOTENCY_CONFLICT",
        "idempotencyKey",
    ),
    (
        "unknown transaction",
        lambda s, m, o: service.reverse(s, 999_999, memo="x"),
        "NOT_FOUND",
        "transactionId",
    ),
    ("vest unknown", lambda s, m, o: service.vest(s, 999_999), "NOT_FOUND", "transactionId"),
]


@pytest.mark.parametrize(("name", "op", "code", "field"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_coded_error_and_writes_nothing(
    runtime: Runtime, name: str, op: Op, code: str, field: str
) -> None:
    member, other = await create_members(runtime, 2)
    await run(runtime, lambda s: service.grant(s, member, 100, idempotency_key="seed"))
    before = await row_counts(runtime)
    async with runtime.transaction() as session:
        with pytest.raises(LedgerError) as caught:
            await op(session, member, other)
        # the transaction is still usable after a LedgerError: the caller may go on and commit
        assert (await service.balances(session, member)).available == 100
    assert (caught.value.code, caught.value.field) == (code, field)
    assert await row_counts(runtime) == before


async def test_reversal_errors(runtime: Runtime) -> None:
    (member,) = await create_members(runtime, 1)
    granted = await run(runtime, lambda s: service.grant(s, member, 10, idempotency_key="g"))
    reversal = await run(runtime, lambda s: service.reverse(s, granted.transaction_id, memo="x"))
    before = await row_counts(runtime)
    for target, code in [
        (granted.transaction_id, "ALREADY_DONE"),
        (reversal.transaction_id, "CONFLICT"),
    ]:
        async with runtime.transaction() as session:
            with pytest.raises(LedgerError) as caught:
                await service.reverse(session, target, memo="again")
        assert caught.value.code == code
    assert await row_counts(runtime) == before
