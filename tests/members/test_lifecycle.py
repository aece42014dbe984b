"""Lifecycle stages with a controllable clock; the scan records each change once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from members.lifecycle import Stage, stage_of
from members.models import LifecycleChange, Member
from members.program import Program
from members.service import register_member, touch
from members.tasks import run_scan_inactivity
from server.runtime import Runtime

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROGRAM = Program()


def test_stage_rules() -> None:
    def stage(joined_days_ago: float, inactive_days: float | None) -> Stage:
        joined = NOW - timedelta(days=joined_days_ago)
        last = None if inactive_days is None else NOW - timedelta(days=inactive_days)
        return stage_of(joined, last, NOW, PROGRAM)

    assert stage(1, 0) is Stage.NEW
    assert stage(6.9, None) is Stage.NEW
    assert stage(7, 1) is Stage.ENGAGED
    assert stage(100, 3) is Stage.RETAINED
    assert stage(400, 3) is Stage.LOYAL
    assert stage(400, 15) is Stage.AT_RISK
    assert stage(400, 14.9) is Stage.LOYAL
    assert stage(400, 60) is Stage.LAPSED
    assert stage(20, None) is Stage.AT_RISK  # never active since joining 20 days ago


async def _member(runtime: Runtime, external_id: str, joined: datetime) -> int:
    async with runtime.transaction() as session:
        member = (await register_member(session, external_id=external_id)).member
        member.joined_at = joined
        return member.id


async def test_scan_records_each_change_once(runtime: Runtime) -> None:
    fresh = await _member(runtime, "fresh", NOW - timedelta(days=2))
    drifting = await _member(runtime, "drifting", NOW - timedelta(days=200))
    async with runtime.transaction() as session:
        await touch(session, drifting, NOW - timedelta(days=20))

    assert await run_scan_inactivity(runtime, NOW) == 2
    assert await run_scan_inactivity(runtime, NOW) == 0  # a rerun records nothing
    async with runtime.sessionmaker() as session:
        stages = dict((await session.execute(select(Member.id, Member.lifecycle_stage))).all())
        assert stages == {fresh: "NEW", drifting: "AT_RISK"}

    later = NOW + timedelta(days=45)  # drifting: 65 days inactive; fresh: 47, never active
    results = await asyncio.gather(
        run_scan_inactivity(runtime, later), run_scan_inactivity(runtime, later)
    )
    assert sum(results) == 2  # two concurrent scans record each change once
    async with runtime.sessionmaker() as session:
        changes = (
            await session.execute(
                select(
                    LifecycleChange.member_id, LifecycleChange.from_stage, LifecycleChange.to_stage
                ).order_by(LifecycleChange.id)
            )
        ).all()
    assert len(changes) == 4
    assert set(changes) == {
        (fresh, None, "NEW"),
        (drifting, None, "AT_RISK"),
        (fresh, "NEW", "AT_RISK"),
        (drifting, "AT_RISK", "LAPSED"),
    }


async def test_touch_only_moves_forward(runtime: Runtime) -> None:
    member_id = await _member(runtime, "toucher", NOW - timedelta(days=30))
    async with runtime.transaction() as session:
        await touch(session, member_id, NOW)
        await touch(session, member_id, NOW - timedelta(days=3))  # a late event
    async with runtime.sessionmaker() as session:
        last = await session.scalar(text("SELECT last_active_at FROM members"))
    assert last == NOW
