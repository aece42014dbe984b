"""post_batch: many grants in one round trip, all or nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from ledger import service
from ledger.errors import LedgerError
from ledger.types import BatchGrant
from server.runtime import Runtime
from tests.ledger.conftest import account_balance, create_members, row_counts, run


async def test_batch_posts_every_entry(runtime: Runtime) -> None:
    members = await create_members(runtime, 3)
    later = datetime.now(UTC) + timedelta(days=9)
    entries = [
        BatchGrant(
            m,
            10 * (i + 1),
            f"import-{i}",
            memo="opening balance",
            expires_at=later if i == 0 else None,
        )
        for i, m in enumerate(members)
    ] + [BatchGrant(members[0], 7, "import-xp", currency="xp")]
    posted = await run(runtime, lambda s: service.post_batch(s, entries, lifetime_days=365))
    assert len(posted) == 4 and not any(p.replayed for p in posted)
    assert len({p.transaction_id for p in posted}) == 4
    async with runtime.transaction() as session:
        got = await service.balances_for_members(session, members)
        assert [got[m].available for m in members] == [10, 20, 30]
        assert (await service.balances(session, members[0], "xp")).available == 7
        lots = await service.expiring_lots(session, members[0], within_days=10)
    assert [lot.amount for lot in lots] == [10]
    assert await account_balance(runtime, "system:issuance:points") == -60
    # the same batch again is a replay of every entry and moves nothing
    again = await run(runtime, lambda s: service.post_batch(s, entries, lifetime_days=365))
    assert all(p.replayed for p in again)
    assert [p.transaction_id for p in again] == [p.transaction_id for p in posted]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (BatchGrant(999_999, 5, "x"), "NOT_FOUND"),
        (BatchGrant(0, 5, "x", currency="gold"), "INVALID_INPUT"),
        (BatchGrant(0, 0, "x"), "INVALID_INPUT"),
        (BatchGrant(0, 5, "seed"), "IDEMPOTENCY_CONFLICT"),
        (BatchGrant(0, 5, "dup"), "INVALID_INPUT"),
    ],
)
async def test_one_bad_entry_writes_nothing(runtime: Runtime, bad: BatchGrant, code: str) -> None:
    (member,) = await create_members(runtime, 1)
    await run(runtime, lambda s: service.grant(s, member, 1, idempotency_key="seed"))
    if bad.member_id == 0:
        bad = BatchGrant(member, bad.amount, bad.idempotency_key, currency=bad.currency)
    entries = [BatchGrant(member, 5, "dup"), BatchGrant(member, 6, "ok-2"), bad]
    before = await row_counts(runtime)
    with pytest.raises(LedgerError) as caught:
        await run(runtime, lambda s: service.post_batch(s, entries))
    assert caught.value.code == code
    assert await row_counts(runtime) == before


async def test_concurrent_batches_over_the_same_members_post_everything_once(
    runtime: Runtime,
) -> None:
    """Four imports at once on four connections, each touching every member in its own
    order, and one of them posted twice: no deadlock (accounts are locked in id order),
    every entry posted exactly once, balances the sum of it all. The twin that takes the
    account locks second sees the first's transactions once it has them, and replays."""
    members = await create_members(runtime, 40)
    batches = [
        [
            BatchGrant(m, 1 + b, f"concurrent-{b}-{m}")
            for m in (members if b % 2 else list(reversed(members)))
        ]
        for b in range(4)
    ]
    batches.append(batches[0])  # a retry racing the first attempt

    async def post(entries: list[BatchGrant]) -> list[bool]:
        posted = await run(runtime, lambda s: service.post_batch(s, entries))
        return [p.replayed for p in posted]

    outcomes = await asyncio.gather(*(post(entries) for entries in batches))
    # one twin posted every entry, the other replayed every entry
    assert sorted([outcomes[0], outcomes[4]]) == [[False] * 40, [True] * 40], outcomes
    assert not any(o for outcome in outcomes[1:4] for o in outcome)
    async with runtime.transaction() as session:
        got = await service.balances_for_members(session, members)
    assert {got[m].available for m in members} == {1 + 2 + 3 + 4}
    assert await account_balance(runtime, "system:issuance:points") == -10 * len(members)


async def test_a_key_a_concurrent_batch_commits_first_is_a_coded_conflict(
    runtime: Runtime,
) -> None:
    """Two imports use one idempotency key for different members: the second passes the
    checks while the first is uncommitted, then waits on the key's index entry; once the
    first commits it is refused with CONFLICT and writes nothing (a retry would then get
    IDEMPOTENCY_CONFLICT)."""
    first_member, second_member = await create_members(runtime, 2)

    async def blocked_on_a_lock() -> bool:
        async with runtime.transaction() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query LIKE '%ledger_post_batch%'"
                )
            )
        return bool(waiting)

    async with runtime.transaction() as first:
        await service.post_batch(first, [BatchGrant(first_member, 5, "shared-key")])
        second = asyncio.create_task(
            run(
                runtime,
                lambda s: service.post_batch(s, [BatchGrant(second_member, 7, "shared-key")]),
            )
        )
        for _ in range(200):
            if await blocked_on_a_lock():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the second batch never waited for the first")
    with pytest.raises(LedgerError) as refused:
        await second
    assert refused.value.code == "CONFLICT"
    async with runtime.transaction() as session:
        got = await service.balances_for_members(session, [first_member, second_member])
    assert (got[first_member].available, got[second_member].available) == (5, 0)
    with pytest.raises(LedgerError) as retried:
        await run(
            runtime, lambda s: service.post_batch(s, [BatchGrant(second_member, 7, "shared-key")])
        )
    assert retried.value.code == "IDEMPOTENCY_CONFLICT"
