"""Shared set-up for the member tests: tiers, members and xp, straight through the services."""

from __future__ import annotations

from datetime import datetime

from ledger import service as ledger
from members.rewards import after_xp_credit
from members.service import register_member
from members.tiers import TierInput, upsert_tier
from server.runtime import Runtime

LADDER = (
    TierInput(key="member", name="Member", rank=0, xp_threshold=0, window_days=365),
    TierInput(
        key="silver",
        name="Silver",
        rank=1,
        xp_threshold=500,
        retention_xp=300,
        window_days=365,
        points_multiplier=1.25,
    ),
    TierInput(
        key="gold",
        name="Gold",
        rank=2,
        xp_threshold=2000,
        retention_xp=1500,
        window_days=365,
        points_multiplier=1.5,
    ),
)


async def make_ladder(runtime: Runtime) -> None:
    async with runtime.transaction() as session:
        for tier in LADDER:
            await upsert_tier(session, tier)


async def make_member(runtime: Runtime, external_id: str, **fields: object) -> int:
    async with runtime.transaction() as session:
        registration = await register_member(session, external_id=external_id, **fields)  # type: ignore[arg-type]
        return registration.member.id


async def earn_xp(runtime: Runtime, member_id: int, amount: int, key: str, now: datetime) -> None:
    async with runtime.transaction() as session:
        await ledger.grant(session, member_id, amount, idempotency_key=key, currency="xp")
        await after_xp_credit(session, member_id, now)
