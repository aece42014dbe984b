"""The score encoding and the periods: pure functions, and the Lua script's arithmetic on a
real Redis (its numbers are doubles: scores up to 10^9 and beyond must stay exact)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leaderboards import store
from leaderboards.encoding import (
    MAX_SLOT,
    SCORE_CAP,
    TICK_MICROSECONDS,
    decode,
    encode,
    slot_of,
)
from leaderboards.periods import (
    ALL_TIME,
    DAILY,
    MONTHLY,
    WEEKLY,
    following,
    parse_period,
    period_at,
    preceding,
)
from server.runtime import Runtime

PARIS = "Europe/Paris"


def test_encoded_values_order_by_score_then_by_who_got_there_first() -> None:
    assert encode(10, 5) > encode(10, 6) > encode(9, 0)
    assert encode(10**9, 0) > encode(10**9, MAX_SLOT) > encode(10**9 - 1, 0)
    assert encode(SCORE_CAP - 1, MAX_SLOT) < encode(SCORE_CAP, 0)
    for score in (0, 1, 123_456_789, 10**9, SCORE_CAP - 1):
        for slot in (0, 1, MAX_SLOT // 2, MAX_SLOT):
            value = encode(score, slot)
            assert value < 2**53  # exact as a double
            assert float(value) == value
            assert decode(float(value)) == (score, slot)
    # above the tie-break range the score stays exact, without a tie-break
    assert decode(float(encode(5 * 10**12, 7))) == (5 * 10**12, None)


def test_periods_follow_local_midnights_dst_included() -> None:
    # Paris switches to summer time on 2026-03-29: that day lasts 23 hours
    spring = period_at(DAILY, datetime(2026, 3, 29, 12, tzinfo=UTC), PARIS)
    assert spring.id == "2026-03-29"
    assert spring.start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert spring.end == datetime(2026, 3, 29, 22, tzinfo=UTC)
    assert following(spring, PARIS).id == "2026-03-30"
    assert preceding(spring, PARIS).id == "2026-03-28"
    # one microsecond before local midnight is still the previous day
    assert period_at(DAILY, spring.end - timedelta(microseconds=1), PARIS).id == "2026-03-29"
    assert period_at(DAILY, spring.end, PARIS).id == "2026-03-30"

    week = period_at(WEEKLY, datetime(2026, 11, 25, tzinfo=UTC), PARIS)
    assert week.id == "2026-W48"
    assert week.start == datetime(2026, 11, 22, 23, tzinfo=UTC)  # Monday 00:00 in Paris
    assert parse_period(WEEKLY, "2026-W48", PARIS) == week
    assert parse_period(WEEKLY, "2026-11-29", PARIS) == week  # a date inside it
    month = period_at(MONTHLY, datetime(2026, 12, 31, 23, 30, tzinfo=UTC), PARIS)
    assert month.id == "2027-01"  # already January in Paris
    assert parse_period(MONTHLY, "2027-01", PARIS) == month
    assert period_at(ALL_TIME, datetime.now(UTC), PARIS).id == "all"
    for kind, bad in ((DAILY, "2026-W48"), (DAILY, "yesterday"), (MONTHLY, "2026-13"),
                      (ALL_TIME, "2026")):  # fmt: skip
        with pytest.raises(ValueError):
            parse_period(kind, bad, PARIS)


def test_every_period_fits_its_ticks() -> None:
    longest = {DAILY: timedelta(hours=25), WEEKLY: timedelta(days=7, hours=1),
               MONTHLY: timedelta(days=31, hours=1)}  # fmt: skip
    for kind, length in longest.items():
        assert length // timedelta(microseconds=TICK_MICROSECONDS[kind]) <= MAX_SLOT
    day = period_at(DAILY, datetime(2026, 3, 29, 12, tzinfo=UTC), PARIS)
    assert day.start is not None and day.end is not None
    assert slot_of(day, day.start) == 0
    assert slot_of(day, day.start + timedelta(milliseconds=19)) == 0
    assert slot_of(day, day.start + timedelta(milliseconds=20)) == 1
    assert slot_of(day, day.end) < MAX_SLOT


async def test_the_update_script_keeps_scores_exact_in_redis(runtime: Runtime) -> None:
    day = period_at(DAILY, datetime(2026, 3, 29, 12, tzinfo=UTC), PARIS)
    key = "ql:lb:{test:v1:exact}"

    def fact(member: int, amount: int, slot: int) -> store.Fact:
        return store.Fact(key, member, amount, slot, 0, f"t:{member}")

    # two members at 10^9: the one that got there first (smaller slot) ranks first
    await store.apply(runtime.redis, [fact(1, 10**9 - 7, 10), fact(2, 10**9, 3_000_000)])
    await store.apply(runtime.redis, [fact(1, 7, 4_000_000)])
    found = await store.entries(runtime.redis, key)
    assert [(member, decode(value)) for member, value in found] == [
        (2, (10**9, 3_000_000)),
        (1, (10**9, 4_000_000)),
    ]
    # an update that arrives late (an older slot) keeps the later time
    await store.apply(runtime.redis, [fact(2, 1, 5)])
    assert decode(await runtime.redis.zscore(key, "2") or 0) == (10**9 + 1, 3_000_000)
    # past the tie-break range the score is still exact
    await store.apply(runtime.redis, [fact(3, 10**9, 1), fact(3, 10**9, 2), fact(3, 10**9, 3)])
    assert decode(await runtime.redis.zscore(key, "3") or 0) == (3 * 10**9, None)
    assert slot_of(day, day.start or day.end or datetime.now(UTC)) == 0
