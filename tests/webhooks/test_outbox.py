"""Producing webhook events: the durable signal path (outbox rows written in the business
transaction), and every event type from the action that makes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from badges import service as badge_service
from badges import titles as title_service
from ledger import service as ledger
from members.models import Member
from members.program import configure_program
from members.service import register_member, touch
from members.tasks import run_evaluate_tiers, run_scan_inactivity
from redemptions import draws
from redemptions import service as redemption_service
from server import signals
from server.runtime import Runtime
from tests.ledger.conftest import advance_clock
from tests.members.helpers import earn_xp, make_ladder, make_member
from tests.redemptions.helpers import make_item
from tests.webhooks.helpers import outbox, subscribe, types_of
from webhooks import outbox as webhook_outbox
from webhooks.tasks import run_announce_expiring

URL = "http://127.0.0.1:9/hooks"  # never called here: these tests stop at the outbox


# ---- the durable signal path -----------------------------------------------------------------


async def test_durable_writers_run_inside_the_transaction(runtime: Runtime) -> None:
    seen: list[list[signals.Signal]] = []
    after: list[list[signals.Signal]] = []

    def writer(session: Session, batch: list[signals.Signal]) -> None:
        seen.append(batch)
        session.execute(text("CREATE TEMP TABLE IF NOT EXISTS durable_probe (n int)"))
        session.execute(text("INSERT INTO durable_probe VALUES (:n)"), {"n": len(batch)})
        # still inside the transaction: what it wrote is visible to it
        assert session.execute(text("SELECT count(*) FROM durable_probe")).scalar_one() >= 1

    async def handler(batch: list[signals.Signal]) -> None:
        after.append(batch)

    signals.persist(["probe.fact"], writer)
    signals.subscribe("probe.fact", handler)
    try:
        async with runtime.transaction() as session:
            signals.emit(session, "probe.fact", n=1)
            signals.emit(session, "other.fact", n=2)
            signals.emit(session, "probe.fact", n=3)
            assert seen == []  # not before the commit
        assert [[s.payload["n"] for s in batch] for batch in seen] == [[1, 3]]
        assert [[s.payload["n"] for s in batch] for batch in after] == [[1, 3]]  # as before

        with pytest.raises(RuntimeError, match="roll back"):
            async with runtime.transaction() as session:
                signals.emit(session, "probe.fact", n=4)
                raise RuntimeError("roll back")
        assert len(seen) == 1 and len(after) == 1  # a rollback runs neither
    finally:
        signals.stop_persisting(writer)
        signals.unsubscribe("probe.fact", handler)


async def test_a_failing_writer_fails_the_commit(runtime: Runtime) -> None:
    def writer(session: Session, batch: list[signals.Signal]) -> None:
        raise RuntimeError("outbox unavailable")

    signals.persist(["points.credited"], writer)
    try:
        with pytest.raises(RuntimeError, match="outbox unavailable"):
            async with runtime.transaction() as session:
                member = (await register_member(session, external_id="lost")).member
                await ledger.grant(session, member.id, 10, idempotency_key="lost")
    finally:
        signals.stop_persisting(writer)
    async with runtime.transaction() as session:  # nothing committed without its event
        assert await session.scalar(text("SELECT count(*) FROM members")) == 0
        assert await session.scalar(text("SELECT count(*) FROM transactions")) == 0


async def test_a_rolled_back_savepoint_takes_its_signals_back(runtime: Runtime) -> None:
    await subscribe(runtime, URL, ["points.earned"])
    (member_id,) = await _members(runtime, 1)
    received: list[signals.Signal] = []

    async def handler(batch: list[signals.Signal]) -> None:
        received.extend(batch)

    signals.subscribe("points.credited", handler)
    try:
        async with runtime.transaction() as session:
            await ledger.grant(session, member_id, 5, idempotency_key="kept")
            with pytest.raises(RuntimeError):
                async with session.begin_nested():
                    await ledger.grant(session, member_id, 7, idempotency_key="undone")
                    raise RuntimeError("undo the savepoint")
    finally:
        signals.unsubscribe("points.credited", handler)
    assert [s.payload["amount"] for s in received] == [5]
    assert [e["data"]["amount"] for e in await outbox(runtime)] == [5]


# ---- what is written, and when ---------------------------------------------------------------


async def _members(runtime: Runtime, count: int) -> list[int]:
    ids = []
    for n in range(count):
        async with runtime.transaction() as session:
            ids.append((await register_member(session, external_id=f"hook-{n}")).member.id)
    return ids


async def test_nothing_is_written_without_a_subscription(runtime: Runtime) -> None:
    (member_id,) = await _members(runtime, 1)
    await subscribe(runtime, URL, ["badge.awarded"])  # points.earned has no endpoint
    await subscribe(runtime, URL + "/off", ["points.earned"], active=False)
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 10, idempotency_key="unheard")
    assert await outbox(runtime) == []


async def test_points_earned_commits_with_the_credit_and_never_without(runtime: Runtime) -> None:
    first = await subscribe(runtime, URL, ["points.earned"])
    second = await subscribe(runtime, URL + "/2", ["points.earned", "badge.awarded"])
    (member_id,) = await _members(runtime, 1)
    async with runtime.transaction() as session:
        posted = await ledger.grant(session, member_id, 25, idempotency_key="earn")
    with pytest.raises(RuntimeError):
        async with runtime.transaction() as session:
            await ledger.grant(session, member_id, 99, idempotency_key="rolled-back")
            raise RuntimeError("roll back")
    async with runtime.transaction() as session:  # a replay moves nothing: no event either
        await ledger.grant(session, member_id, 25, idempotency_key="earn")

    (event,) = await outbox(runtime)
    assert event["type"] == "points.earned"
    assert event["deliveries"] == 2  # one per subscribed endpoint
    assert event["data"] == {
        "memberId": str(member_id),
        "externalId": "hook-0",
        "currency": "points",
        "amount": 25,
        "kind": "grant",
        "transactionId": str(posted.transaction_id),
        "earnedAt": posted.created_at.isoformat(),
    }
    async with runtime.sessionmaker() as session:
        targets = set(await session.scalars(text("SELECT webhook_id FROM webhook_deliveries")))
    assert targets == {first.id, second.id}


async def test_member_registered_and_welcome_points(runtime: Runtime) -> None:
    await subscribe(runtime, URL)
    async with runtime.transaction() as session:
        await configure_program(session, {"welcome_points": 50})
    async with runtime.transaction() as session:
        await register_member(session, external_id="newcomer", display_name="New Comer")
    async with runtime.transaction() as session:  # registering again is not news
        await register_member(session, external_id="newcomer")
    events = {e["type"]: e for e in await outbox(runtime)}
    assert set(events) == {"member.registered", "points.earned"}
    assert events["member.registered"]["data"]["externalId"] == "newcomer"
    assert events["member.registered"]["data"]["displayName"] == "New Comer"
    assert events["points.earned"]["data"]["amount"] == 50


async def test_badges_titles_and_tiers(runtime: Runtime) -> None:
    await subscribe(runtime, URL)
    await make_ladder(runtime)
    member_id = await make_member(runtime, "climber")
    now = datetime.now(UTC)
    async with runtime.transaction() as session:
        await badge_service.upsert_badge(
            session, badge_service.BadgeInput(key="explorer", name="Explorer", levels=3)
        )
        await title_service.upsert_title(
            session, title_service.TitleInput(key="cxo", name="CXO", max_holders=1), now=now
        )
    async with runtime.transaction() as session:
        await badge_service.award_badge(session, member_id, "explorer", 2, now=now)
        await badge_service.award_badge(session, member_id, "explorer", 1, now=now)  # no change
        await title_service.grant_title(session, member_id, "cxo", now=now)
    await earn_xp(runtime, member_id, 600, "xp-silver", now)

    events = [e for e in await outbox(runtime) if e["type"] != "points.earned"]
    by_type = {e["type"]: e["data"] for e in events}
    assert sorted(by_type) == [
        "badge.awarded",
        "member.registered",
        "tier.changed",
        "title.granted",
    ]
    assert len(events) == 5  # member.registered, badge once, title, tier twice (base, silver)
    assert by_type["badge.awarded"]["badgeKey"] == "explorer"
    assert by_type["badge.awarded"]["level"] == 2
    assert by_type["title.granted"]["titleKey"] == "cxo"
    tiers = [e["data"] for e in events if e["type"] == "tier.changed"]
    assert [(t["fromTier"], t["toTier"], t["reason"]) for t in tiers] == [
        (None, "member", "upgrade"),
        ("member", "silver", "upgrade"),
    ]


async def test_retention_downgrade_is_a_tier_change(runtime: Runtime) -> None:
    await make_ladder(runtime)
    member_id = await make_member(runtime, "lapsing")
    await earn_xp(runtime, member_id, 2500, "xp-gold", datetime.now(UTC))
    since = datetime.now(UTC) - timedelta(days=400)
    async with runtime.transaction() as session:
        await session.execute(update(Member).where(Member.id == member_id).values(tier_since=since))
        # the xp was earned before the window that has just ended: none inside it
        await session.execute(
            text("UPDATE postings SET created_at = :t"), {"t": since - timedelta(days=1)}
        )
    await subscribe(runtime, URL, ["tier.changed"])
    result = await run_evaluate_tiers(runtime, datetime.now(UTC))
    assert result["downgraded"] == 1
    (event,) = await outbox(runtime)
    assert event["data"]["externalId"] == "lapsing"
    assert (event["data"]["fromTier"], event["data"]["toTier"]) == ("gold", "silver")
    assert event["data"]["reason"] == "retention"


async def test_member_at_risk_from_the_inactivity_scan(runtime: Runtime) -> None:
    await subscribe(runtime, URL, ["member.at_risk"])
    now = datetime.now(UTC)
    async with runtime.transaction() as session:
        fresh = (await register_member(session, external_id="fresh")).member
        drifting = (await register_member(session, external_id="drifting")).member
        drifting.joined_at = now - timedelta(days=200)
    async with runtime.transaction() as session:
        await touch(session, drifting.id, now - timedelta(days=20))
    assert fresh.id != drifting.id
    assert await run_scan_inactivity(runtime, now) == 2  # fresh: NEW (no event); drifting
    assert await run_scan_inactivity(runtime, now) == 0
    (event,) = await outbox(runtime)
    assert event["type"] == "member.at_risk"
    assert event["data"]["externalId"] == "drifting"
    assert event["data"]["stage"] == "AT_RISK"


async def test_quest_completed_through_the_api(runtime: Runtime, api: Any) -> None:
    from tests.quests.helpers import record, upsert_quest

    await subscribe(runtime, URL, ["quest.completed"])
    await api.register("quester")
    await upsert_quest(api, key="first-coffee", cadence="ONCE", eventType="purchase", target=1)
    await record(api, "quester", "purchase", "evt-1")
    await record(api, "quester", "purchase", "evt-1")  # a replay completes nothing new
    await record(api, "quester", "purchase", "evt-2")  # already complete
    (event,) = await outbox(runtime)
    assert event["type"] == "quest.completed"
    assert event["data"]["questKey"] == "first-coffee"
    assert event["data"]["externalId"] == "quester"
    assert event["data"]["eventType"] == "purchase"


async def test_redemptions_created_fulfilled_cancelled(runtime: Runtime) -> None:
    await subscribe(
        runtime, URL, ["redemption.created", "redemption.fulfilled", "redemption.cancelled"]
    )
    (member_id,) = await _members(runtime, 1)
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 1000, idempotency_key="funds")
    await make_item(runtime, "mug", cost=100)
    made = []
    for key in ("r1", "r2"):
        async with runtime.transaction() as session:
            outcome = await redemption_service.redeem(
                session, external_id="hook-0", item_key="mug", quantity=1, idempotency_key=key
            )
            made.append(outcome.redemption.id)
    async with runtime.transaction() as session:
        await redemption_service.fulfill(session, made[0])
        await redemption_service.cancel(session, made[1], reason="changed my mind")

    events = [(e["type"], e["data"]) for e in await outbox(runtime)]
    assert sorted(t for t, _ in events) == [
        "redemption.cancelled",
        "redemption.created",
        "redemption.created",
        "redemption.fulfilled",
    ]
    for event_type, data in events:
        assert data["itemKey"] == "mug" and data["cost"] == 100 and data["quantity"] == 1
        assert data["status"] == event_type.rsplit(".", 1)[1].upper()
    cancelled = next(d for t, d in events if t == "redemption.cancelled")
    assert cancelled["redemptionId"] == str(made[1])
    assert cancelled["reason"] == "changed my mind"


async def test_lottery_losers_are_fulfilled_redemptions(runtime: Runtime) -> None:
    members = await _members(runtime, 3)
    for member_id in members:
        async with runtime.transaction() as session:
            await ledger.grant(session, member_id, 100, idempotency_key=f"funds-{member_id}")
    await make_item(runtime, "raffle", kind="LOTTERY", cost=10)
    for n in range(3):
        async with runtime.transaction() as session:
            await redemption_service.redeem(
                session,
                external_id=f"hook-{n}",
                item_key="raffle",
                quantity=1,
                idempotency_key=f"ticket-{n}",
            )
    await subscribe(runtime, URL, ["redemption.fulfilled"])
    async with runtime.transaction() as session:
        await draws.draw_lottery(session, "raffle", 1)
    events = await outbox(runtime)
    assert len(events) == 2  # the two losing tickets; the winner waits for its prize
    assert {e["data"]["itemKey"] for e in events} == {"raffle"}


async def test_points_expired_from_settlement(runtime: Runtime) -> None:
    await subscribe(runtime, URL, ["points.expired"])
    members = await _members(runtime, 2)
    for member_id in members:
        async with runtime.transaction() as session:
            await ledger.grant(
                session, member_id, 30, idempotency_key=f"lot-{member_id}", lifetime_days=5
            )
    async with runtime.transaction() as session:
        await ledger.spend(session, members[0], 10, idempotency_key="spend")
    await advance_clock(runtime, 6)
    async with runtime.transaction() as session:
        assert (await ledger.settle_expirations(session)).count == 2
    with pytest.raises(RuntimeError):  # a rolled-back settlement announces nothing
        async with runtime.transaction() as session:
            await ledger.settle_expirations(session)
            raise RuntimeError("roll back")
    async with runtime.transaction() as session:
        assert (await ledger.settle_expirations(session)).count == 0
    events = sorted(await outbox(runtime), key=lambda e: e["data"]["amount"])
    assert [e["type"] for e in events] == ["points.expired", "points.expired"]
    assert [e["data"]["amount"] for e in events] == [20, 30]
    assert [e["data"]["externalId"] for e in events] == ["hook-0", "hook-1"]
    assert all(e["deliveries"] == 1 and e["data"]["lotId"] for e in events)


async def test_points_expiring_announced_once(runtime: Runtime) -> None:
    members = await _members(runtime, 2)
    now = datetime.now(UTC)
    async with runtime.transaction() as session:
        await ledger.grant(session, members[0], 40, idempotency_key="soon", lifetime_days=3)
        await ledger.grant(session, members[1], 60, idempotency_key="later", lifetime_days=30)
        await ledger.grant(session, members[1], 70, idempotency_key="never")
    assert await run_announce_expiring(runtime, now, send=False) == 0  # nobody listens
    await subscribe(runtime, URL, ["points.expiring"])
    assert await run_announce_expiring(runtime, now, batch_size=1, send=False) == 1
    assert await run_announce_expiring(runtime, now, send=False) == 0  # once per lot
    (event,) = await outbox(runtime)
    assert event["type"] == "points.expiring"
    assert event["data"]["externalId"] == "hook-0"
    assert event["data"]["amount"] == 40
    assert event["deliveries"] == 1
    # ten days on, the 30-day lot is within the 7-day window too
    assert await run_announce_expiring(runtime, now + timedelta(days=24), send=False) == 1
    assert await types_of(runtime) == ["points.expiring", "points.expiring"]


async def test_subscriptions_are_cached_but_refreshed_by_an_upsert(runtime: Runtime) -> None:
    (member_id,) = await _members(runtime, 1)
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 1, idempotency_key="before")  # caches "none"
    await subscribe(runtime, URL, ["points.earned"])  # this process forgets the cache
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, 2, idempotency_key="after")
    assert [e["data"]["amount"] for e in await outbox(runtime)] == [2]
    webhook_outbox.forget_subscriptions()
