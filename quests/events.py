"""The earning pipeline: ``record_event``.

store the event (idempotent per member and key) → advance every active quest listening for
its type whose filter matches, in the period of the event's local time → completed quests
grant their rewards (auto-claim) → referral rewards → the member's ``lastActiveAt``.
All in the caller's transaction: a failure anywhere leaves nothing behind, and a retry with
the same key returns the first answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from members.models import Tier
from members.program import Program, get_program
from members.service import require_active
from members.tiers import list_tiers
from quests.definitions import (
    QuestDef,
    active_quests_by_event_type,
    validate_event_type,
)
from quests.filters import matches
from quests.models import Event
from quests.periods import Period, period_for
from quests.progress import (
    Advance,
    ProgressUpdate,
    advance_all,
)
from quests.rewards import KnownTier, grant_rewards, quest_memo, quest_source_key
from referrals.service import on_member_event
from server import rawsql, signals
from server.awards import Award, AwardKind
from server.errors import DomainError, ErrorCode, invalid, not_found

MAX_PAST = timedelta(days=7)  # offline clients may report late, not later than this
MAX_SKEW = timedelta(minutes=5)  # clocks differ: a little "future" is tolerated
MAX_PROPERTIES_BYTES = 8_192
EVENT_RECORDED = "event.recorded"  # signal, delivered after commit (server.signals)


@dataclass(frozen=True)
class StoredEvent:
    id: int
    type: str
    occurred_at: datetime


@dataclass
class EventOutcome:
    event: StoredEvent
    progressed: list[int] = field(default_factory=list)  # quest_progress ids
    completed: list[int] = field(default_factory=list)
    awarded: list[Award] = field(default_factory=list)
    replayed: bool = False
    # The progress rows as this event left them (not kept for replays: re-read those).
    updates: dict[int, ProgressUpdate] = field(default_factory=dict)


def event_input_hash(
    event_type: str, properties: dict[str, Any], occurred_at: datetime | None
) -> str:
    canonical = json.dumps(
        [event_type, properties, occurred_at.isoformat() if occurred_at else None],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_event(
    event_type: str,
    properties: object,
    occurred_at: datetime | None,
    idempotency_key: str,
    now: datetime,
) -> tuple[dict[str, Any], datetime]:
    """The event's properties and the moment it occurred, once its input is acceptable."""
    if not 1 <= len(idempotency_key) <= 255:
        raise invalid("idempotencyKey must be 1 to 255 characters", "idempotencyKey")
    validate_event_type(event_type, "type")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise invalid("properties must be a JSON object", "properties")
    if len(json.dumps(properties)) > MAX_PROPERTIES_BYTES:
        raise invalid(f"properties are limited to {MAX_PROPERTIES_BYTES} bytes", "properties")
    moment = occurred_at or now
    if moment.tzinfo is None:
        raise invalid("occurredAt needs a timezone", "occurredAt")
    if moment < now - MAX_PAST:
        raise invalid("occurredAt is more than 7 days in the past", "occurredAt")
    if moment > now + MAX_SKEW:
        raise invalid("occurredAt is in the future", "occurredAt")
    return properties, moment


def _amount(quest: QuestDef, properties: dict[str, Any]) -> Decimal | None:
    """What the event adds to the quest: a SUM quest's property value (None: the event does
    not count for it); 1 for the other aggregates."""
    if quest.aggregate != "SUM":
        return Decimal(1)
    value = properties.get(quest.property or "")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount > 0 else None


def awards_to_json(awards: list[Award]) -> list[dict[str, Any]]:
    return [
        {"kind": a.kind.value, "amount": a.amount, "currency": a.currency, "key": a.key}
        for a in awards
    ]


def awards_from_json(raw: list[dict[str, Any]]) -> list[Award]:
    return [
        Award(AwardKind(a["kind"]), amount=a["amount"], currency=a["currency"], key=a["key"])
        for a in raw
    ]


@dataclass(frozen=True)
class EventMember:
    """What the pipeline needs to know about the member (read with the event insert)."""

    id: int
    external_id: str
    status: str
    timezone: str | None
    tier_id: int | None
    referred_by_id: int | None

    @classmethod
    def from_row(cls, row: Any) -> EventMember:
        return cls(
            row["id"],
            row["external_id"],
            row["status"],
            row["timezone"],
            row["tier_id"],
            row["referred_by_id"],
        )


# The member and the event in one round trip: no row means no such member; a row without
# ``event_id`` means the key was used before (a replay or a conflict).
STORE_EVENT_SQL = """
WITH m AS (
    SELECT id, external_id, status, timezone, tier_id, referred_by_id
    FROM members WHERE external_id = $1
), stored AS (
    INSERT INTO events (member_id, type, properties, occurred_at, idempotency_key, input_hash)
    SELECT m.id, $2, $3::jsonb, $4, $5, $6 FROM m
    ON CONFLICT (member_id, idempotency_key) DO NOTHING
    RETURNING id
)
SELECT m.*, (SELECT id FROM stored) AS event_id FROM m
"""

# The event's answer, kept for replays, and the member's last activity (only forward).
FINISH_EVENT_SQL = """
WITH touched AS (
    UPDATE members SET last_active_at = $3
    WHERE id = $2 AND (last_active_at IS NULL OR last_active_at < $3)
    RETURNING 1
)
UPDATE events SET result = $4::jsonb WHERE id = $1
"""


async def record_event(
    session: AsyncSession,
    *,
    external_id: str,
    event_type: str,
    properties: object,
    occurred_at: datetime | None,
    idempotency_key: str,
    now: datetime,
) -> EventOutcome:
    props, moment = validate_event(event_type, properties, occurred_at, idempotency_key, now)
    digest = event_input_hash(event_type, props, occurred_at)
    row = await rawsql.fetchrow(
        session,
        STORE_EVENT_SQL,
        external_id,
        event_type,
        json.dumps(props),
        moment,
        idempotency_key,
        digest,
    )
    if row is None:
        raise not_found(f"no member with externalId {external_id!r}", "externalId")
    member = EventMember.from_row(row)
    event_id = row["event_id"]
    if event_id is None:
        return await _replay(session, member.id, idempotency_key, digest)
    require_active(member)  # checked after the key: a replay still answers for a suspension
    program = await get_program(session)
    outcome = EventOutcome(event=StoredEvent(event_id, event_type, moment))
    await _progress_quests(session, member, outcome, props, program, now)
    if member.referred_by_id is not None:
        outcome.awarded += await on_member_event(
            session, member.id, event_type, now=now, event_id=event_id
        )
    result = {
        "progressed": outcome.progressed,
        "completed": outcome.completed,
        "awarded": awards_to_json(outcome.awarded),
    }
    await rawsql.execute(session, FINISH_EVENT_SQL, event_id, member.id, moment, json.dumps(result))
    announce(session, member.id, outcome)
    return outcome


async def _progress_quests(
    session: AsyncSession,
    member: EventMember,
    outcome: EventOutcome,
    properties: dict[str, Any],
    program: Program,
    now: datetime,
) -> None:
    moment = outcome.event.occurred_at
    candidates = matching_quests(
        (await active_quests_by_event_type(session)).get(outcome.event.type, []),
        moment,
        properties,
    )
    tiers = await list_tiers(session) if tier_gated(candidates) else []
    advances = advances_for(candidates, member, moment, properties, program, tiers)
    updates = await advance_all(
        session, member_id=member.id, advances=advances, event_id=outcome.event.id, now=now
    )
    known = KnownTier(member.tier_id)  # as read with the event: no re-read per reward
    for progress in updates:
        outcome.progressed.append(progress.progress_id)
        if progress.completed_now:
            outcome.completed.append(progress.progress_id)
            if progress.quest.auto_claim:
                outcome.awarded += await claim(session, member.id, progress, program, now, known)
        outcome.updates[progress.progress_id] = progress


def announce(target: signals.Target, member_id: int, outcome: EventOutcome) -> None:
    """EVENT_RECORDED, delivered once the event is durable."""
    event = outcome.event
    signals.emit(
        target,
        EVENT_RECORDED,
        member_id=member_id,
        event_id=event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        completed=list(outcome.completed),
    )


def matching_quests(
    quests: list[QuestDef], moment: datetime, properties: dict[str, Any]
) -> list[QuestDef]:
    """The quests of the event's type that are open at its time and whose filter it meets."""
    return [q for q in quests if q.open_at(moment) and matches(q.filter, properties)]


def tier_gated(quests: list[QuestDef]) -> bool:
    return any(q.min_tier_rank is not None for q in quests)


def advances_for(
    candidates: list[QuestDef],
    member: EventMember,
    moment: datetime,
    properties: dict[str, Any],
    program: Program,
    tiers: list[Tier],
) -> list[Advance]:
    """What the event adds to each matching quest the member's tier opens, in the period of
    the event's local time (``tiers``: every tier, needed when a quest has a minimum)."""
    if tier_gated(candidates):
        rank = next((t.rank for t in tiers if t.id == member.tier_id), None)
        candidates = [
            q
            for q in candidates
            if q.min_tier_rank is None or (rank is not None and rank >= q.min_tier_rank)
        ]
    timezone = member.timezone or program.timezone
    advances = []
    periods: dict[str, Period] = {}  # quests of one cadence share the event's period
    for quest in candidates:
        amount = _amount(quest, properties)
        if amount is not None:
            period = periods.get(quest.cadence)
            if period is None:
                period = periods[quest.cadence] = period_for(quest.cadence, moment, timezone)
            advances.append(Advance(quest, period, amount))
    return advances


async def claim(
    session: AsyncSession,
    member_id: int,
    progress: ProgressUpdate,
    program: Program,
    now: datetime,
    known_tier: KnownTier | None = None,
) -> list[Award]:
    """Grant an auto-claim quest's rewards at once (its row is frozen and claimed)."""
    return await grant_rewards(
        session,
        member_id=member_id,
        rewards=progress.quest.rewards,
        source_key=quest_source_key(progress.progress_id),
        event_type=progress.quest.event_type,
        earned_at=now,
        program=program,
        now=now,
        memo=quest_memo(progress.quest.name),
        known_tier=known_tier,
    )


async def _replay(
    session: AsyncSession, member_id: int, idempotency_key: str, digest: str
) -> EventOutcome:
    event = await session.scalar(
        select(Event).where(Event.member_id == member_id, Event.idempotency_key == idempotency_key)
    )
    if event is None:  # pragma: no cover - the conflicting row exists by construction
        raise DomainError(ErrorCode.CONFLICT, "event vanished; retry")
    if event.input_hash != digest:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "this idempotencyKey was used for a different event",
            "idempotencyKey",
        )
    result = event.result or {}
    return EventOutcome(
        event=StoredEvent(event.id, event.type, event.occurred_at),
        progressed=list(result.get("progressed", [])),
        completed=list(result.get("completed", [])),
        awarded=awards_from_json(result.get("awarded", [])),
        replayed=True,
    )
