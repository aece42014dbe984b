"""Referral rewards through the service: once per referee (replays, concurrent events), the
referrer's monthly cap (in the program's timezone, under concurrency), suspended members,
the cycle guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from sqlalchemy import select, update

from ledger import service as ledger
from members.models import Member
from members.program import configure_program
from members.service import get_member_by_external_id, set_status
from referrals.models import ReferralReward
from referrals.service import on_member_event
from server.awards import Award, AwardKind
from server.runtime import Runtime
from tests.badges.helpers import all_at_once
from tests.members.helpers import make_member

NOW = datetime(2030, 3, 14, 12, tzinfo=UTC)
REFEREE_GETS = Award(AwardKind.POINTS, amount=50, currency="points", key="referral")
_event_ids = count(1000)


async def setup_program(runtime: Runtime, **overrides: object) -> None:
    settings: dict[str, object] = {
        "referrer_reward": 100,
        "referee_reward": 50,
        "referral_qualifying_event": "purchase",
        "max_referral_rewards_per_month": 2,
        **overrides,
    }
    async with runtime.transaction() as session:
        await configure_program(session, settings)


async def refer(runtime: Runtime, referrer: str, referee: str) -> int:
    async with runtime.sessionmaker() as session:
        found = await get_member_by_external_id(session, referrer)
        assert found is not None
    return await make_member(runtime, referee, referral_code=found.referral_code)


async def event(
    runtime: Runtime,
    member_id: int,
    event_type: str = "purchase",
    now: datetime = NOW,
    event_id: int | None = None,
) -> list[Award]:
    async with runtime.transaction() as session:
        return await on_member_event(
            session,
            member_id,
            event_type,
            now=now,
            event_id=event_id if event_id is not None else next(_event_ids),
        )


async def points_of(runtime: Runtime, *member_ids: int) -> list[int]:
    async with runtime.sessionmaker() as session:
        return [(await ledger.balances(session, m)).available for m in member_ids]


async def outcomes(runtime: Runtime) -> list[tuple[int, str, int]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            select(
                ReferralReward.referee_id,
                ReferralReward.referrer_outcome,
                ReferralReward.referrer_amount,
            ).order_by(ReferralReward.referee_id)
        )
        return [(r.referee_id, r.referrer_outcome, r.referrer_amount) for r in rows]


async def test_qualifying_event_rewards_both_once(runtime: Runtime) -> None:
    await setup_program(runtime)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    assert await event(runtime, bob, "check_in") == []  # not the qualifying event
    assert await points_of(runtime, alice, bob) == [0, 0]
    assert await event(runtime, bob, event_id=7) == [REFEREE_GETS]
    assert await points_of(runtime, alice, bob) == [100, 50]
    assert await event(runtime, bob) == []  # a second purchase: nothing more
    # the same event replayed reports what it granted, and grants nothing again
    assert await event(runtime, bob, event_id=7) == [REFEREE_GETS]
    assert await points_of(runtime, alice, bob) == [100, 50]
    assert await event(runtime, alice) == []  # alice was not referred
    assert await outcomes(runtime) == [(bob, "rewarded", 100)]


async def test_concurrent_qualifying_events_reward_once(runtime: Runtime) -> None:
    await setup_program(runtime)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")

    def op(event_id: int):
        return lambda session: on_member_event(session, bob, "purchase", now=NOW, event_id=event_id)

    results = await all_at_once(runtime, [op(100 + i) for i in range(10)])
    assert sorted(map(len, results)) == [0] * 9 + [1]
    assert await points_of(runtime, alice, bob) == [100, 50]
    # the same event delivered twice at once: rewarded once, both report it
    carol = await refer(runtime, "alice", "carol")
    twins = await all_at_once(
        runtime,
        [
            lambda s: on_member_event(s, carol, "purchase", now=NOW, event_id=555),
            lambda s: on_member_event(s, carol, "purchase", now=NOW, event_id=555),
        ],
    )
    assert twins == [[REFEREE_GETS], [REFEREE_GETS]]
    assert await points_of(runtime, alice, carol) == [200, 50]


async def test_referrer_rewards_stop_at_the_monthly_cap(runtime: Runtime) -> None:
    await setup_program(runtime, max_referral_rewards_per_month=2)
    alice = await make_member(runtime, "alice")
    referees = [await refer(runtime, "alice", f"friend-{i}") for i in range(4)]
    for referee in referees[:3]:
        assert await event(runtime, referee) == [REFEREE_GETS]  # the referee always gets theirs
    assert await points_of(runtime, alice, *referees[:3]) == [200, 50, 50, 50]
    assert [o[1:] for o in await outcomes(runtime)] == [
        ("rewarded", 100),
        ("rewarded", 100),
        ("capped", 0),
    ]
    next_month = datetime(2030, 4, 1, 0, 30, tzinfo=UTC)
    assert await event(runtime, referees[3], now=next_month) == [REFEREE_GETS]
    assert await points_of(runtime, alice) == [300]  # a new month, a new allowance


async def test_the_month_is_the_program_timezone_month(runtime: Runtime) -> None:
    await setup_program(runtime, max_referral_rewards_per_month=1, timezone="Asia/Tokyo")
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    carol = await refer(runtime, "alice", "carol")
    march_31_tokyo = datetime(2030, 3, 31, 14, 59, tzinfo=UTC)  # 23:59 on 31 March in Tokyo
    april_1_tokyo = datetime(2030, 3, 31, 15, 1, tzinfo=UTC)  # 00:01 on 1 April in Tokyo
    await event(runtime, bob, now=march_31_tokyo)
    await event(runtime, carol, now=april_1_tokyo)  # still March in UTC, April in Tokyo
    assert await points_of(runtime, alice) == [200]
    assert [o[1] for o in await outcomes(runtime)] == ["rewarded", "rewarded"]


async def test_the_cap_holds_under_concurrent_referees(runtime: Runtime) -> None:
    await setup_program(runtime, max_referral_rewards_per_month=3)
    alice = await make_member(runtime, "alice")
    referees = [await refer(runtime, "alice", f"friend-{i}") for i in range(12)]

    def op(referee: int):
        return lambda session: on_member_event(
            session, referee, "purchase", now=NOW, event_id=next(_event_ids)
        )

    results = await all_at_once(runtime, [op(referee) for referee in referees])
    assert results == [[REFEREE_GETS]] * 12
    assert await points_of(runtime, alice) == [300]
    assert sorted(o[1] for o in await outcomes(runtime)) == ["capped"] * 9 + ["rewarded"] * 3


async def test_zero_cap_and_no_cap(runtime: Runtime) -> None:
    await setup_program(runtime, max_referral_rewards_per_month=0)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    assert await event(runtime, bob) == [REFEREE_GETS]
    assert await points_of(runtime, alice) == [0]
    await setup_program(runtime, max_referral_rewards_per_month=None)
    for i in range(4):
        assert await event(runtime, await refer(runtime, "alice", f"more-{i}")) == [REFEREE_GETS]
    assert await points_of(runtime, alice) == [400]


async def test_suspended_members_get_nothing(runtime: Runtime) -> None:
    await setup_program(runtime)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    async with runtime.transaction() as session:
        await set_status(session, "bob", "suspended")
    assert await event(runtime, bob) == []
    assert await points_of(runtime, alice, bob) == [0, 0]
    async with runtime.transaction() as session:
        await set_status(session, "bob", "active")
        await set_status(session, "alice", "suspended")
    assert await event(runtime, bob) == [REFEREE_GETS]  # reactivated, bob still qualifies
    assert await points_of(runtime, alice, bob) == [0, 50]
    assert await outcomes(runtime) == [(bob, "suspended", 0)]


async def test_no_reward_without_a_qualifying_event_or_rewards(runtime: Runtime) -> None:
    await setup_program(runtime, referral_qualifying_event=None)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    assert await event(runtime, bob) == []
    await setup_program(runtime, referee_reward=0, referrer_reward=0)
    assert await event(runtime, bob) == []  # recorded as done, but nothing to grant
    assert await points_of(runtime, alice, bob) == [0, 0]
    assert await outcomes(runtime) == [(bob, "no_reward", 0)]


async def test_a_referral_cycle_is_refused(runtime: Runtime) -> None:
    """Registration cannot make a cycle; a corrupted chain is still refused, rewarding nobody."""
    await setup_program(runtime)
    alice = await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    carol = await refer(runtime, "bob", "carol")
    async with runtime.transaction() as session:  # corrupt: alice referred by carol
        await session.execute(update(Member).where(Member.id == alice).values(referred_by_id=carol))
    for member in (alice, bob, carol):
        assert await event(runtime, member) == []
    dave = await make_member(runtime, "dave")
    async with runtime.transaction() as session:  # corrupt: a self-referral
        await session.execute(update(Member).where(Member.id == dave).values(referred_by_id=dave))
    assert await event(runtime, dave) == []
    assert await points_of(runtime, alice, bob, carol, dave) == [0, 0, 0, 0]
    assert await outcomes(runtime) == []


async def test_rewards_expire_with_the_program_lifetime(runtime: Runtime) -> None:
    await setup_program(runtime, points_lifetime_days=30)
    await make_member(runtime, "alice")
    bob = await refer(runtime, "alice", "bob")
    await event(runtime, bob)
    async with runtime.sessionmaker() as session:
        lots = await ledger.expiring_lots(session, bob, within_days=31)
    assert [lot.amount for lot in lots] == [50]
    assert lots[0].expires_at - datetime.now(UTC) < timedelta(days=30, minutes=1)
