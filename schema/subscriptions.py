"""Subscriptions (WebSocket ``/graphql``, graphql-transport-ws): ``memberUpdates`` and
``leaderboardUpdates``.

Clients authenticate in ``connection_init`` with ``{"Authorization": "Bearer <token>"}``
(``server.app``). Updates travel through Redis pub/sub (``leaderboards.live``), so a change
committed by any API process or worker reaches subscribers on every API process.

A subscription lives as long as its WebSocket: it must not hold a database connection
between updates, so every update is resolved with a short-lived ``Context`` (its own
DataLoaders and read session, closed right after).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from redis.exceptions import RedisError
from sqlalchemy import select
from strawberry.types import Info

from leaderboards import keys
from leaderboards.live import hub_for
from leaderboards.service import read_session
from ledger.service import balances
from members.models import Member as MemberModel
from quests.models import Quest as QuestModel
from quests.models import QuestProgress as ProgressModel
from schema.context import Context
from schema.errors import ClientError
from schema.leaderboards import Leaderboard, build_leaderboard, unavailable
from schema.permissions import require_member_external_id
from server.runtime import Runtime

# A busy board changes many times a second: send at most one update per interval.
LEADERBOARD_MIN_INTERVAL = 0.5


@strawberry.enum
class MemberUpdateKind(Enum):
    BALANCE = "BALANCE"
    QUEST_COMPLETED = "QUEST_COMPLETED"
    BADGE = "BADGE"
    TITLE = "TITLE"
    TIER = "TIER"


@strawberry.type(description="Something that just happened to the caller's member.")
class MemberUpdate:
    kind: MemberUpdateKind
    at: datetime
    currency: str | None = strawberry.field(default=None, description="BALANCE")
    amount: int | None = strawberry.field(default=None, description="BALANCE: the change.")
    balance: int | None = strawberry.field(
        default=None, description="BALANCE: the available balance after the change."
    )
    transaction_id: strawberry.ID | None = strawberry.field(default=None, description="BALANCE")
    quest_key: str | None = strawberry.field(default=None, description="QUEST_COMPLETED")
    badge_key: str | None = strawberry.field(default=None, description="BADGE")
    level: int | None = strawberry.field(default=None, description="BADGE: its level.")
    title_key: str | None = strawberry.field(default=None, description="TITLE")
    tier_key: str | None = strawberry.field(default=None, description="TIER: the new tier.")


async def _balance(runtime: Runtime, member_id: int, currency: str) -> int:
    async with read_session(runtime) as session:
        return (await balances(session, member_id, currency)).available


async def _completed_quests(
    runtime: Runtime, member_id: int, message: dict[str, Any]
) -> list[MemberUpdate]:
    at = datetime.fromisoformat(message["at"])
    async with read_session(runtime) as session:
        quests = await session.scalars(
            select(QuestModel.key)
            .join(ProgressModel, ProgressModel.quest_id == QuestModel.id)
            .where(ProgressModel.id.in_(message["completed"]))
            .where(ProgressModel.member_id == member_id)
            .order_by(ProgressModel.id)
        )
        return [
            MemberUpdate(kind=MemberUpdateKind.QUEST_COMPLETED, at=at, quest_key=key)
            for key in quests
        ]


async def member_updates_for(
    runtime: Runtime, member_id: int, message: dict[str, Any]
) -> list[MemberUpdate]:
    """What one live message (``leaderboards.live``) means for the member's client."""
    kind = message.get("kind")
    at = datetime.fromisoformat(message["at"]) if message.get("at") else datetime.now(UTC)
    if kind in ("credit", "balance"):
        currency = message["currency"]
        transaction = message.get("transactionId")
        return [
            MemberUpdate(
                kind=MemberUpdateKind.BALANCE,
                at=at,
                currency=currency,
                amount=message.get("amount"),
                balance=await _balance(runtime, member_id, currency),
                transaction_id=strawberry.ID(str(transaction)) if transaction else None,
            )
        ]
    if kind == "event":
        return await _completed_quests(runtime, member_id, message)
    if kind == "badge":
        return [
            MemberUpdate(
                kind=MemberUpdateKind.BADGE,
                at=at,
                badge_key=message.get("badgeKey"),
                level=message.get("level"),
            )
        ]
    if kind == "title":
        return [MemberUpdate(kind=MemberUpdateKind.TITLE, at=at, title_key=message.get("titleKey"))]
    if kind == "tier":
        return [MemberUpdate(kind=MemberUpdateKind.TIER, at=at, tier_key=message.get("toTier"))]
    return []


@contextlib.asynccontextmanager
async def _listening(runtime: Runtime, channel: str) -> Any:
    try:
        async with hub_for(runtime.redis).listen(channel) as queue:
            yield queue
    except (RedisError, OSError) as error:
        raise unavailable() from error


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Live updates of the caller's member (member token): balance changes, "
        "quest completions, badges, titles, tier changes."
    )
    async def member_updates(self, info: Info) -> AsyncGenerator[MemberUpdate, None]:
        external_id = require_member_external_id(info)
        runtime: Runtime = info.context.runtime
        async with read_session(runtime) as session:
            member_id = await session.scalar(
                select(MemberModel.id).where(MemberModel.external_id == external_id)
            )
        if member_id is None:
            raise ClientError(f"no member with externalId {external_id!r}", "NOT_FOUND")
        async with _listening(runtime, keys.member_channel(runtime.redis, member_id)) as queue:
            while True:
                message = await queue.get()
                for update in await member_updates_for(runtime, member_id, message):
                    yield update

    @strawberry.subscription(
        description="A board's standings (as `leaderboard` with the same arguments), sent "
        "at once and then whenever they change (at most twice a second)."
    )
    async def leaderboard_updates(
        self,
        info: Info,
        key: str,
        first: int = 10,
        around: str | None = None,
    ) -> AsyncGenerator[Leaderboard, None]:
        parent: Context = info.context
        runtime = parent.runtime

        async def current() -> Leaderboard:
            ctx = Context(runtime=runtime, principal=parent.principal)
            try:
                return await build_leaderboard(ctx, key, first=first, around=around, period=None)
            finally:
                await ctx.close()

        first_view = await current()  # fails early for an unknown board or a bad argument
        async with _listening(runtime, keys.board_channel(runtime.redis, key)) as queue:
            yield first_view
            while True:
                await queue.get()
                await asyncio.sleep(LEADERBOARD_MIN_INTERVAL)
                while not queue.empty():  # everything that arrived meanwhile: one update
                    queue.get_nowait()
                yield await current()


__all__ = ["MemberUpdate", "Subscription"]
