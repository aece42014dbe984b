"""A failure after a write rolls the write back: what ``Runtime.transaction()`` promises.

Hot paths send SQL straight on the session's asyncpg connection (``ledger._calls`` and
``server.rawsql``). SQLAlchemy's asyncpg adapter only sends BEGIN before the first statement
*it* executes, so when such a raw call is the first statement of a transaction it runs outside
any transaction and commits on its own: a later error (or a crash) no longer undoes it, and
row locks it takes are released at once. Found by the worker-crash test, where the killed
worker's in-flight settlement batch still committed once its lock was granted.

``server.rawsql.driver`` (which the ledger uses too) now begins the adapter's transaction
before handing out the connection; these tests keep it that way.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import insert

from ledger import service
from members.models import Member
from server import rawsql
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.support import plain_dsn


class Boom(Exception):
    pass


async def count(runtime: Runtime, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(plain_dsn(runtime.settings.database_url or ""))
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def new_member(runtime: Runtime, external_id: str) -> int:
    async with runtime.transaction() as session:
        result = await session.execute(
            insert(Member).returning(Member.id),
            [{"external_id": external_id, "referral_code": external_id}],
        )
        return int(result.scalar_one())


async def test_a_ledger_write_after_a_sqlalchemy_statement_rolls_back(runtime: Runtime) -> None:
    """The case that works today: SQLAlchemy spoke first, so BEGIN was sent."""
    member_id = await new_member(runtime, "atomic-1")
    with pytest.raises(Boom):
        async with runtime.transaction() as session:
            await session.execute(insert(Member), [{"external_id": "x", "referral_code": "x"}])
            await service.grant(session, member_id, 10, idempotency_key="atomic-after")
            raise Boom
    assert (
        await count(
            runtime, "SELECT count(*) FROM transactions WHERE idempotency_key = $1", "atomic-after"
        )
        == 0
    )


async def test_a_ledger_write_first_in_a_transaction_rolls_back(runtime: Runtime) -> None:
    member_id = await new_member(runtime, "atomic-2")
    with pytest.raises(Boom):
        async with runtime.transaction() as session:
            await service.grant(session, member_id, 10, idempotency_key="atomic-first")
            raise Boom
    assert (
        await count(
            runtime, "SELECT count(*) FROM transactions WHERE idempotency_key = $1", "atomic-first"
        )
        == 0
    )


async def test_a_rawsql_write_first_in_a_transaction_rolls_back(runtime: Runtime) -> None:
    with pytest.raises(Boom):
        async with runtime.transaction() as session:
            await rawsql.execute(
                session,
                "INSERT INTO members (external_id, referral_code) VALUES ($1, $1)",
                "atomic-raw",
            )
            raise Boom
    assert (
        await count(runtime, "SELECT count(*) FROM members WHERE external_id = $1", "atomic-raw")
        == 0
    )


async def test_a_refused_event_is_not_stored_and_its_retry_counts(
    api: GraphQLClient, runtime: Runtime
) -> None:
    """What a client sees: ``recordEvent`` for a suspended member answers NOT_ELIGIBLE, but the
    event's first statement had already committed on its own, so the retry with the same key
    after reactivation is answered as a replay of nothing and advances no quest."""
    await api.register("atomic-suspended")
    quest = await api.admin(
        """mutation($i: UpsertQuestInput!) { upsertQuest(input: $i) { errors { code } } }""",
        {
            "i": {
                "key": "atomic-quest",
                "name": "Buy",
                "cadence": "DAILY",
                "eventType": "purchase",
                "target": 5,
                "rewards": [{"kind": "POINTS", "amount": 1}],
                "aggregate": "COUNT",
                "autoClaim": True,
                "active": True,
            }
        },
    )
    assert quest.data["upsertQuest"]["errors"] == []

    async def set_status(status: str) -> None:
        result = await api.admin(
            """mutation($i: SetMemberStatusInput!) { setMemberStatus(input: $i) {
                 errors { code } } }""",
            {"i": {"externalId": "atomic-suspended", "status": status}},
        )
        assert result.data["setMemberStatus"]["errors"] == []

    record = """mutation($i: RecordEventInput!) { recordEvent(input: $i) {
        progressed { progress } errors { code } } }"""
    event = {"externalId": "atomic-suspended", "type": "purchase", "idempotencyKey": "atomic-e1"}
    await set_status("suspended")
    refused = await api.admin(record, {"i": event})
    assert refused.data["recordEvent"]["errors"] == [{"code": "NOT_ELIGIBLE"}]
    assert await count(runtime, "SELECT count(*) FROM events") == 0
    await set_status("active")
    retried = await api.admin(record, {"i": event})
    assert retried.data["recordEvent"]["progressed"] == [{"progress": 1}]
