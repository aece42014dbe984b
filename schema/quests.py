"""Quests, events, check-ins: ``quests``, ``upsertQuest``, ``recordEvent``, ``checkIn``,
``claimQuestReward``, ``configureCheckInRewards``, and ``Member.quests`` / ``Member.streak``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

import strawberry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON
from strawberry.types import Info

from ledger.service import CREDITED
from members.program import get_program
from members.service import require_member
from quests import checkin, definitions
from quests import events as event_service
from quests import service as quest_service
from quests.definitions import QuestDef
from quests.event_at_once import record_event_at_once
from quests.models import Quest as QuestModel
from quests.models import QuestProgress as ProgressModel
from schema.awards import Award, awards_from_values
from schema.errors import UserError
from schema.mutations import run_as_one_statement, run_in_transaction
from schema.permissions import IsAdmin, IsAdminOrEvents, IsMember, require_member_external_id
from server import signals
from server.rawsql import Autocommit


@strawberry.enum
class Cadence(Enum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"
    ONCE = "ONCE"


@strawberry.enum
class Aggregate(Enum):
    COUNT = "COUNT"
    SUM = "SUM"
    DISTINCT_DAYS = "DISTINCT_DAYS"
    STREAK_DAYS = "STREAK_DAYS"


@strawberry.enum
class RewardKind(Enum):
    POINTS = "POINTS"
    XP = "XP"
    BADGE = "BADGE"
    TITLE = "TITLE"


@strawberry.enum
class QuestStatus(Enum):
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CLAIMED = "CLAIMED"


@strawberry.type
class QuestReward:
    kind: RewardKind
    amount: int | None
    currency: str | None
    key: str | None


@strawberry.type(description="A quest: daily, weekly, monthly, or a one-off achievement.")
class Quest:
    key: str
    name: str
    description: str | None
    cadence: Cadence
    event_type: str
    filter: JSON
    aggregate: Aggregate
    property: str | None
    target: int
    rewards: list[QuestReward]
    starts_at: datetime | None
    ends_at: datetime | None
    min_tier: str | None
    auto_claim: bool
    active: bool


def _rewards(raw: list[dict[str, Any]]) -> list[QuestReward]:
    return [
        QuestReward(
            kind=RewardKind(r["kind"]),
            amount=r.get("amount"),
            currency=r.get("currency"),
            key=r.get("key"),
        )
        for r in raw
    ]


# QuestDef snapshots are shared (cached by quests.definitions until a quest changes), so their
# GraphQL view is built once per snapshot, not once per event per quest: recordEvent returns a
# view of every quest the event advanced.
_views: dict[int, tuple[QuestDef, Quest]] = {}
VIEWS_MAX = 10_000


def quest_from_def(quest: QuestDef) -> Quest:
    cached = _views.get(id(quest))
    if cached is not None and cached[0] is quest:
        return cached[1]
    if len(_views) >= VIEWS_MAX:
        _views.clear()
    view = _quest_view(quest)
    _views[id(quest)] = (quest, view)  # holding the snapshot keeps its id from being reused
    return view


def _quest_view(quest: QuestDef) -> Quest:
    return Quest(
        key=quest.key,
        name=quest.name,
        description=quest.description,
        cadence=Cadence(quest.cadence),
        event_type=quest.event_type,
        filter=JSON(quest.filter),
        aggregate=Aggregate(quest.aggregate),
        property=quest.property,
        target=quest.target,
        rewards=_rewards(quest.rewards),
        starts_at=quest.starts_at,
        ends_at=quest.ends_at,
        min_tier=quest.min_tier_key,
        auto_claim=quest.auto_claim,
        active=quest.active,
    )


def quest_from_model(quest: QuestModel, min_tier: str | None) -> Quest:
    return _quest_view(definitions.quest_def_from_model(quest, min_tier_key=min_tier))


@strawberry.type(description="A member's progress on a quest in one period.")
class QuestProgress:
    quest: Quest
    progress: int = strawberry.field(description="rounded down for SUM quests")
    target: int
    status: QuestStatus
    period_start: datetime | None = strawberry.field(description="null for achievements")
    period_end: datetime | None


class ProgressLike(Protocol):
    @property
    def progress(self) -> Decimal: ...
    @property
    def target(self) -> int: ...
    @property
    def status(self) -> str: ...


def progress_view(
    quest: QuestDef, row: ProgressLike | None, start: datetime, end: datetime | None
) -> QuestProgress:
    once = quest.cadence == "ONCE"
    return QuestProgress(
        quest=quest_from_def(quest),
        progress=int(row.progress) if row else 0,
        target=row.target if row else quest.target,
        status=QuestStatus(row.status) if row else QuestStatus.IN_PROGRESS,
        period_start=None if once else start,
        period_end=None if once else end,
    )


@strawberry.type
class Streak:
    current: int
    longest: int
    last_check_in: datetime | None


@strawberry.type
class MemberQuestFields:
    db_id: strawberry.Private[int]
    # The member's own timezone as the member row was read (None: the program's).
    timezone_value: strawberry.Private[str | None]

    @strawberry.field(description="Active quests with the member's progress this period.")
    async def quests(self, info: Info) -> list[QuestProgress]:
        now = datetime.now(UTC)
        async with info.context.reading() as session:
            program = await get_program(session)
            rows = await quest_service.member_quests(
                session, self.db_id, self.timezone_value or program.timezone, now
            )
        return [progress_view(r.quest, r.progress, r.period_start, r.period_end) for r in rows]

    @strawberry.field(description="The member's check-in streak.")
    async def streak(self, info: Info) -> Streak:
        async with info.context.reading() as session:
            program = await get_program(session)
            today = datetime.now(ZoneInfo(self.timezone_value or program.timezone)).date()
            current, longest, last = await checkin.streak_of(session, self.db_id, today)
        return Streak(current=current, longest=longest, last_check_in=last)


# ---- queries ---------------------------------------------------------------------------------


@strawberry.type
class QuestQueries:
    @strawberry.field(description="Active quests (open now).")
    async def quests(self, info: Info) -> list[Quest]:
        now = datetime.now(UTC)
        async with info.context.reading() as session:
            index = await definitions.active_quests_by_event_type(session)
        found = [q for quests in index.values() for q in quests if q.open_at(now)]
        return [quest_from_def(q) for q in sorted(found, key=lambda q: q.id)]


# ---- mutations -------------------------------------------------------------------------------


@strawberry.input
class QuestRewardInput:
    kind: RewardKind
    amount: int | None = None
    currency: str | None = None
    key: str | None = None


@strawberry.input
class UpsertQuestInput:
    key: str
    name: str
    cadence: Cadence
    event_type: str
    target: int
    rewards: list[QuestRewardInput]
    description: str | None = None
    filter: JSON | None = None
    aggregate: Aggregate = Aggregate.COUNT
    property: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    min_tier: str | None = None
    auto_claim: bool = True
    active: bool = True


@strawberry.type
class UpsertQuestPayload:
    quest: Quest | None
    errors: list[UserError]


@strawberry.input
class RecordEventInput:
    external_id: str
    type: str
    idempotency_key: str
    properties: JSON | None = None
    occurred_at: datetime | None = None


@strawberry.type
class RecordedEvent:
    id: strawberry.ID
    type: str
    occurred_at: datetime


@strawberry.type
class RecordEventPayload:
    event: RecordedEvent | None
    progressed: list[QuestProgress]
    completed: list[QuestProgress]
    awarded: list[Award]
    errors: list[UserError]


@strawberry.input
class CheckInInput:
    idempotency_key: str | None = None


@strawberry.type
class CheckInPayload:
    streak: Streak | None
    awarded: list[Award]
    errors: list[UserError]


@strawberry.input
class ClaimQuestRewardInput:
    quest_key: str


@strawberry.type
class ClaimQuestRewardPayload:
    progress: QuestProgress | None
    awarded: list[Award]
    errors: list[UserError]


@strawberry.input
class CheckInRewardInput:
    day: int = strawberry.field(description="streak day; 0 = every day without its own row")
    points: int = 0
    xp: int = 0


@strawberry.type
class CheckInReward:
    day: int
    points: int
    xp: int


@strawberry.input
class ConfigureCheckInRewardsInput:
    rewards: list[CheckInRewardInput]


@strawberry.type
class ConfigureCheckInRewardsPayload:
    rewards: list[CheckInReward]
    errors: list[UserError]


async def _progress_views(
    session: AsyncSession, progress_ids: list[int]
) -> dict[int, QuestProgress]:
    if not progress_ids:
        return {}
    index = await definitions.active_quests_by_event_type(session)
    by_id = {q.id: q for quests in index.values() for q in quests}
    rows = await session.scalars(select(ProgressModel).where(ProgressModel.id.in_(progress_ids)))
    views = {}
    for row in rows:
        quest = by_id.get(row.quest_id)
        if quest is None:  # deactivated meanwhile: describe it from its row
            model = await session.get_one(QuestModel, row.quest_id)
            quest = definitions.quest_def_from_model(model)
        views[row.id] = progress_view(quest, row, row.period_start, row.period_end)
    return views


@strawberry.type
class QuestMutations:
    @strawberry.mutation(permission_classes=[IsAdmin])
    async def upsert_quest(self, info: Info, input: UpsertQuestInput) -> UpsertQuestPayload:
        data = definitions.QuestInput(
            key=input.key,
            name=input.name,
            cadence=input.cadence.value,
            event_type=input.event_type,
            target=input.target,
            rewards=[
                {"kind": r.kind.value, "amount": r.amount, "currency": r.currency, "key": r.key}
                for r in input.rewards
            ],
            description=input.description,
            filter=cast(dict[str, Any] | None, input.filter),
            aggregate=input.aggregate.value,
            property=input.property,
            starts_at=input.starts_at,
            ends_at=input.ends_at,
            min_tier=input.min_tier,
            auto_claim=input.auto_claim,
            active=input.active,
        )

        async def work(session: AsyncSession) -> UpsertQuestPayload:
            quest = await definitions.upsert_quest(session, data)
            return UpsertQuestPayload(quest=quest_from_model(quest, input.min_tier), errors=[])

        return await run_in_transaction(
            info, work, lambda errors: UpsertQuestPayload(quest=None, errors=errors)
        )

    @strawberry.mutation(
        permission_classes=[IsAdminOrEvents],
        description="Report what a member did; advances quests and grants rewards. Retry-safe.",
    )
    async def record_event(self, info: Info, input: RecordEventInput) -> RecordEventPayload:
        arguments: dict[str, Any] = {
            "external_id": input.external_id,
            "event_type": input.type,
            "properties": input.properties,
            "occurred_at": input.occurred_at,
            "idempotency_key": input.idempotency_key,
            "now": datetime.now(UTC),
        }

        def answer(
            outcome: event_service.EventOutcome, views: dict[int, Any]
        ) -> RecordEventPayload:
            return RecordEventPayload(
                event=RecordedEvent(
                    id=strawberry.ID(str(outcome.event.id)),
                    type=outcome.event.type,
                    occurred_at=outcome.event.occurred_at,
                ),
                progressed=[views[i] for i in outcome.progressed if i in views],
                completed=[views[i] for i in outcome.completed if i in views],
                awarded=awards_from_values(outcome.awarded),
                errors=[],
            )

        def updated(outcome: event_service.EventOutcome) -> dict[int, Any]:
            return {
                pid: progress_view(u.quest, u, u.period_start, u.period_end)
                for pid, u in outcome.updates.items()
            }

        async def at_once(unit: Autocommit) -> RecordEventPayload | None:
            may_credit = CREDITED not in await signals.durable_topics(unit.connection)
            outcome = await record_event_at_once(unit, may_credit=may_credit, **arguments)
            return None if outcome is None else answer(outcome, updated(outcome))

        async def work(session: AsyncSession) -> RecordEventPayload:
            outcome = await event_service.record_event(session, **arguments)
            views = updated(outcome) or await _progress_views(session, outcome.progressed)
            return answer(outcome, views)

        def failed(errors: list[UserError]) -> RecordEventPayload:
            return RecordEventPayload(
                event=None, progressed=[], completed=[], awarded=[], errors=errors
            )

        topics = frozenset({event_service.EVENT_RECORDED})
        return await run_as_one_statement(info, topics, at_once, work, failed)

    @strawberry.mutation(permission_classes=[IsMember], description="Once per local day.")
    async def check_in(self, info: Info, input: CheckInInput | None = None) -> CheckInPayload:
        external_id = require_member_external_id(info)
        key = input.idempotency_key if input else None

        async def work(session: AsyncSession) -> CheckInPayload:
            member = await require_member(session, external_id)
            result = await checkin.check_in(session, member, datetime.now(UTC), key)
            streak = Streak(
                current=result.streak.current,
                longest=result.streak.longest,
                last_check_in=result.streak.last_check_in_at,
            )
            return CheckInPayload(
                streak=streak, awarded=awards_from_values(result.awards), errors=[]
            )

        return await run_in_transaction(
            info, work, lambda errors: CheckInPayload(streak=None, awarded=[], errors=errors)
        )

    @strawberry.mutation(permission_classes=[IsMember])
    async def claim_quest_reward(
        self, info: Info, input: ClaimQuestRewardInput
    ) -> ClaimQuestRewardPayload:
        external_id = require_member_external_id(info)

        async def work(session: AsyncSession) -> ClaimQuestRewardPayload:
            member = await require_member(session, external_id)
            claim = await quest_service.claim_reward(
                session, member, input.quest_key, datetime.now(UTC)
            )
            views = await _progress_views(session, [claim.progress.id])
            return ClaimQuestRewardPayload(
                progress=views.get(claim.progress.id),
                awarded=awards_from_values(claim.awards),
                errors=[],
            )

        return await run_in_transaction(
            info,
            work,
            lambda errors: ClaimQuestRewardPayload(progress=None, awarded=[], errors=errors),
        )

    @strawberry.mutation(permission_classes=[IsAdmin])
    async def configure_check_in_rewards(
        self, info: Info, input: ConfigureCheckInRewardsInput
    ) -> ConfigureCheckInRewardsPayload:
        rewards = [checkin.DayReward(r.day, r.points, r.xp) for r in input.rewards]

        async def work(session: AsyncSession) -> ConfigureCheckInRewardsPayload:
            saved = await checkin.configure_rewards(session, rewards)
            return ConfigureCheckInRewardsPayload(
                rewards=[CheckInReward(day=r.day, points=r.points, xp=r.xp) for r in saved],
                errors=[],
            )

        return await run_in_transaction(
            info, work, lambda errors: ConfigureCheckInRewardsPayload(rewards=[], errors=errors)
        )
