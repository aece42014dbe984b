"""Lifecycle stages: where a member is in their relationship with the program.

Inactivity counts from ``lastActiveAt`` (or ``joinedAt`` for a member who never acted); tenure
counts from ``joinedAt``. With the program's thresholds (defaults in brackets):

- ``LAPSED``   inactive for ``lapsedDays`` [60] or more
- ``AT_RISK``  inactive for ``atRiskDays`` [15] or more
- ``NEW``      joined less than ``newMemberDays`` [7] ago
- ``LOYAL``    member for ``loyalDays`` [365] or more (and active)
- ``RETAINED`` member for ``retainedDays`` [90] or more (and active)
- ``ENGAGED``  everyone else: recently joined and active

The stage shown by the API is always computed from these rules, so it is exact at any
moment; the stored ``lifecycle_stage`` only records the last stage the daily scan saw, so
that each change is recorded (``lifecycle_changes``) exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from members.program import Program


class Stage(StrEnum):
    NEW = "NEW"
    ENGAGED = "ENGAGED"
    RETAINED = "RETAINED"
    LOYAL = "LOYAL"
    AT_RISK = "AT_RISK"
    LAPSED = "LAPSED"


def stage_of(
    joined_at: datetime, last_active_at: datetime | None, now: datetime, program: Program
) -> Stage:
    inactive = now - (last_active_at or joined_at)
    tenure = now - joined_at
    if inactive >= timedelta(days=program.lapsed_days):
        return Stage.LAPSED
    if inactive >= timedelta(days=program.at_risk_days):
        return Stage.AT_RISK
    if tenure < timedelta(days=program.new_member_days):
        return Stage.NEW
    if tenure >= timedelta(days=program.loyal_days):
        return Stage.LOYAL
    if tenure >= timedelta(days=program.retained_days):
        return Stage.RETAINED
    return Stage.ENGAGED


# The same rules as ``stage_of``, in SQL over ``members`` (for filters and the daily scan).
STAGE_SQL = """
CASE
  WHEN coalesce(members.last_active_at, members.joined_at)
       <= CAST(:stage_now AS timestamptz) - make_interval(days => :lapsed_days) THEN 'LAPSED'
  WHEN coalesce(members.last_active_at, members.joined_at)
       <= CAST(:stage_now AS timestamptz) - make_interval(days => :at_risk_days) THEN 'AT_RISK'
  WHEN members.joined_at
       > CAST(:stage_now AS timestamptz) - make_interval(days => :new_member_days) THEN 'NEW'
  WHEN members.joined_at
       <= CAST(:stage_now AS timestamptz) - make_interval(days => :loyal_days) THEN 'LOYAL'
  WHEN members.joined_at
       <= CAST(:stage_now AS timestamptz) - make_interval(days => :retained_days) THEN 'RETAINED'
  ELSE 'ENGAGED'
END"""


def stage_params(now: datetime, program: Program) -> dict[str, object]:
    return {
        "stage_now": now,
        "lapsed_days": program.lapsed_days,
        "at_risk_days": program.at_risk_days,
        "new_member_days": program.new_member_days,
        "loyal_days": program.loyal_days,
        "retained_days": program.retained_days,
    }
