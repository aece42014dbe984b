"""``me`` with balances and tier progress: one statement, the same answers as field by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from ledger import service as ledger
from members.tiers import list_tiers
from members.view import member_view
from server.runtime import Runtime
from tests.api import GraphQLClient
from tests.members.helpers import earn_xp, make_ladder, make_member
from tests.support import record_statements

FULL = """query { me { externalId ...Money tierProgress { xpInWindow xpNeeded next { key } } } }
fragment Money on Member {
  balance pendingBalance xp: balance(currency: "xp") }"""


async def rich_member(runtime: Runtime) -> int:
    """Silver (600 xp this year, 900 more two years ago), 100 points of which 20 have expired
    but are not settled yet, and 30 pending."""
    await make_ladder(runtime)
    member_id = await make_member(runtime, "rich")
    now = datetime.now(UTC)
    await earn_xp(runtime, member_id, 900, "old-xp", now)
    async with runtime.transaction() as session:
        await session.execute(
            text("UPDATE postings SET created_at = now() - interval '730 days'")
        )  # everything posted so far: the old xp
    await earn_xp(runtime, member_id, 600, "new-xp", now)
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 80, idempotency_key="keep")
        await ledger.grant(
            session, member_id, 20, idempotency_key="gone", expires_at=now + timedelta(days=1)
        )
        await ledger.credit_pending(
            session, member_id, 30, idempotency_key="pending", pending_days=14
        )
        await session.execute(
            text("UPDATE lots SET expires_at = now() - interval '1 hour' WHERE amount = 20")
        )
    return member_id


async def test_me_with_balances_and_progress_is_one_statement(
    runtime: Runtime, api: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rich_member(runtime)
    sent = record_statements(monkeypatch)
    me = (await api.as_member("rich", FULL)).data["me"]
    assert me == {
        "externalId": "rich",
        "balance": 80,  # the expired 20 are not available any more, settled or not
        "pendingBalance": 30,
        "xp": 1500,  # the xp balance counts everything ever earned
        "tierProgress": {"xpInWindow": 600, "xpNeeded": 1400, "next": {"key": "gold"}},
    }
    assert len(sent) == 1, sent
    # a currency the member holds no account in reads as 0 (with a query of its own)
    gems = await api.as_member("rich", '{ me { balance(currency: "gems") } }')
    assert gems.data["me"] == {"balance": 0}


async def test_the_same_answers_field_by_field(
    runtime: Runtime, api: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked one at a time (no prefetch for the member alone), each field agrees."""
    await rich_member(runtime)
    token_query = "{ me { externalId } }"
    assert (await api.as_member("rich", token_query)).data["me"] == {"externalId": "rich"}
    sent = record_statements(monkeypatch)
    answers = {}
    for field in ("balance", "pendingBalance", 'balance(currency: "xp")'):
        answers[field] = (await api.as_member("rich", f"{{ me {{ {field} }} }}")).data["me"]
    assert answers == {
        "balance": {"balance": 80},
        "pendingBalance": {"pendingBalance": 30},
        'balance(currency: "xp")': {"balance": 1500},
    }
    assert len(sent) == 3  # each still one statement: the member and what it asks, together


async def test_a_member_without_tiers_counts_lifetime_xp(
    runtime: Runtime, api: GraphQLClient
) -> None:
    member_id = await make_member(runtime, "plain")
    await earn_xp(runtime, member_id, 42, "xp", datetime.now(UTC))
    query = "{ me { balance tierProgress { xpInWindow xpNeeded current { key } next { key } } } }"
    me = (await api.as_member("plain", query)).data["me"]
    assert me == {
        "balance": 0,
        "tierProgress": {"xpInWindow": 42, "xpNeeded": 0, "current": None, "next": None},
    }


async def test_a_tier_the_process_does_not_know_yet_is_read_on_its_own(runtime: Runtime) -> None:
    """The window of a tier missing from the tiers passed in is unknown: no xp comes back
    (the resolver then asks for it by itself), never xp over a wrong window."""
    member_id = await rich_member(runtime)
    now = datetime.now(UTC)
    async with runtime.read_pool.acquire() as connection:
        known = await member_view(
            connection, "rich", tiers=await _tiers(runtime), balances=False, xp=True, now=now
        )
        unknown = await member_view(connection, "rich", tiers=[], balances=False, xp=True, now=now)
        missing = await member_view(connection, "nobody", tiers=[], balances=True, xp=True, now=now)
    assert known is not None and known.member.id == member_id
    assert (known.xp_earned, known.window_days, known.balances) == (600, 365, None)
    assert unknown is not None and unknown.xp_earned is None
    assert missing is None


async def _tiers(runtime: Runtime) -> list[Any]:
    async with runtime.sessionmaker() as session:
        return list(await list_tiers(session))
