"""How a score and "who got there first" share one Redis sorted-set score (a double).

A double holds every integer up to 2^53 exactly. We split those 53 bits::

    encoded = score × 2^23 + (2^23 − 1 − slot)          while score < 2^30
    encoded = score × 2^23                               from 2^30 on (no tie-break)

* ``score`` is the board's value (points earned, xp earned, events counted): 30 bits, so
  every score up to 1,073,741,823 (≥ 10^9) orders exactly *with* its tie-break. Above that
  the encoded value is ``score × 2^23`` with no tie-break: still exact (a power-of-two
  multiple of an integer below 2^53 is a double), so scores stay exact far past any real
  board, but equal scores then fall back to the last rule below.
* ``slot`` is when the member reached that score, as a tick count from an anchor. An earlier
  slot makes a larger encoded value, so at equal scores whoever got there first ranks higher.
  The tick and anchor depend on the period so that every period fits in 23 bits
  (8,388,608 ticks):

  ========  ===================  ==========  ============================================
  period    anchor               tick        longest period / ticks used
  ========  ===================  ==========  ============================================
  DAILY     period start         20 ms       25 h (DST day) → 4,500,000
  WEEKLY    period start         100 ms      7 d 1 h → 6,084,000
  MONTHLY   period start         500 ms      31 d 1 h → 5,364,000
  ALL_TIME  2024-01-01 00:00 UTC 1 minute    8,388,607 minutes ≈ 15.9 years (to 2039-12)
  ========  ===================  ==========  ============================================

  Times outside the range are clamped (an ALL_TIME board in 2040 stops breaking ties).
* Two members whose encoded values are equal (same score, same tick) are ordered as Redis
  orders equal scores: by member string, so ``ZREVRANGE`` lists the larger one first. Member
  strings are decimal member ids; the archive orders by ``member_id::text COLLATE "C" DESC``
  to match byte for byte.

"When the member reached the score" is the time of the latest fact that counted (the ledger
transaction's ``created_at`` for points and xp, the event's ``occurred_at`` for counts). Live
updates keep the later of the stored slot and the new one, so the order in which updates
arrive does not matter, and ``rebuild`` (``max(time)`` per member) gives the same value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leaderboards.periods import ALL_TIME, DAILY, MONTHLY, WEEKLY, Period

TIE_BITS = 23
TIE_SLOTS = 1 << TIE_BITS  # 8,388,608
MAX_SLOT = TIE_SLOTS - 1
SCORE_BITS = 30
SCORE_CAP = 1 << SCORE_BITS  # scores from here on carry no tie-break
MAX_EXACT = 1 << 53

ALL_TIME_ANCHOR = datetime(2024, 1, 1, tzinfo=UTC)
TICK_MICROSECONDS = {
    DAILY: 20_000,
    WEEKLY: 100_000,
    MONTHLY: 500_000,
    ALL_TIME: 60_000_000,
}
_MICROSECOND = timedelta(microseconds=1)


def anchor_of(period: Period) -> datetime:
    return period.start if period.start is not None else ALL_TIME_ANCHOR


def slot_of(period: Period, moment: datetime) -> int:
    """The tick of ``moment`` in ``period`` (integer arithmetic on microseconds: the SQL in
    ``rebuild.py`` computes exactly the same number)."""
    micros = (moment - anchor_of(period)) // _MICROSECOND
    return min(max(micros // TICK_MICROSECONDS[period.kind], 0), MAX_SLOT)


def encode(score: int, slot: int) -> int:
    if score >= SCORE_CAP:
        return score * TIE_SLOTS
    return score * TIE_SLOTS + (MAX_SLOT - slot)


def decode(value: float | int | str | bytes) -> tuple[int, int | None]:
    """(score, slot) of an encoded value (slot None above ``SCORE_CAP``)."""
    encoded = int(float(value))
    score, rest = divmod(encoded, TIE_SLOTS)
    if score >= SCORE_CAP:
        return score, None
    return score, MAX_SLOT - rest


def score_of(value: float | int | str | bytes) -> int:
    return decode(value)[0]
