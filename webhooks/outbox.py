"""Producing webhook events: every fact lands in the ``webhook_events`` outbox in the same
database transaction as the fact itself.

How each event type is produced, and what that guarantees:

- **In the business transaction, through signals** (``server.signals.persist``): the owning
  service emits a signal (``points.credited``, ``event.recorded``, ``member.registered``,
  ``tier.changed``, ``member.stage_changed``, ``badge.awarded``, ``title.granted``,
  ``redemption.created|fulfilled|cancelled``); right before that transaction commits, the
  writer below turns the signals into outbox rows plus one ``webhook_deliveries`` row per
  subscribed endpoint, in one statement. A committed fact always has its event; a rolled-back
  one (or a rolled-back savepoint) never has. This covers member.registered, points.earned,
  badge.awarded, title.granted, tier.changed (upgrades and the retention job),
  quest.completed, redemption.created/fulfilled/cancelled and member.at_risk.
- **In the business transaction, from one query per settlement batch**: points.expired. Expiry
  settlement is one set-based statement in the ledger's PL/pgSQL that returns the ``expire``
  transactions it wrote; the ledger emits them as one ``points.expired`` signal and the writer
  below reads their postings and members with one query (migration ``0010``; it replaced a
  row trigger that cost a function call per expired lot).
- **From a scheduled scan**: points.expiring (``webhooks.announce_expiring``): lots that expire
  within ``QUESTLINE_WEBHOOK_EXPIRING_DAYS``, each announced once (``dedupe_key``).

Delivery is then at least once (``webhooks.delivery``): every event carries a stable id.

Endpoints see the events produced while they are subscribed. Which event types have an
endpoint is cached per process for ``SUBSCRIPTIONS_TTL_SECONDS`` (so the hot paths cost no
extra round trip when nobody listens); an endpoint registered in another process starts
receiving within that time. The process that registers it sees it at once.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import structlog
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from server import signals
from server.cache import TTLCache
from server.signals import Signal
from webhooks.events import EVENT_TYPES

log = structlog.get_logger("questline.webhooks.outbox")

SUBSCRIPTIONS_TTL_SECONDS = 10.0
DELIVERIES_PER_MESSAGE = 100

# signal topic -> the webhook event types it can produce
TOPIC_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "points.credited": ("points.earned",),
    "event.recorded": ("quest.completed",),
    "member.registered": ("member.registered",),
    "tier.changed": ("tier.changed",),
    "member.stage_changed": ("member.at_risk",),
    "badge.awarded": ("badge.awarded",),
    "title.granted": ("title.granted",),
    "redemption.created": ("redemption.created",),
    "redemption.fulfilled": ("redemption.fulfilled",),
    "redemption.cancelled": ("redemption.cancelled",),
    "points.expired": ("points.expired",),
}
assert all(t in EVENT_TYPES for types in TOPIC_EVENT_TYPES.values() for t in types)


@dataclass(frozen=True)
class OutboxEvent:
    type: str
    member_id: int | None
    data: dict[str, Any] = field(default_factory=dict)


def json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: object) -> str:
    return json.dumps(value, default=json_default, separators=(",", ":"), sort_keys=True)


# ---- synchronous SQL inside the committing transaction ---------------------------------------


def _fetch(session: Session, sql: str, *args: Any) -> list[Any]:
    """Run ``sql`` on the session's asyncpg connection, in its transaction, from the
    synchronous ``before_commit`` hook (SQLAlchemy's greenlet bridge awaits it)."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    return list(await_only(driver.fetch(sql, *args)))


_subscriptions: TTLCache[str, frozenset[str]] = TTLCache(seconds=SUBSCRIPTIONS_TTL_SECONDS)

SUBSCRIBED_TYPES_SQL = "SELECT DISTINCT unnest(events) AS type FROM webhooks WHERE active"


def _remember_types(rows: list[Any]) -> frozenset[str]:
    return _subscriptions.put("types", frozenset(row["type"] for row in rows))


def subscribed_types(session: Session) -> frozenset[str]:
    """The event types some active endpoint subscribes to (cached for a few seconds)."""
    cached = _subscriptions.get("types")
    return cached if cached is not None else _remember_types(_fetch(session, SUBSCRIBED_TYPES_SQL))


async def wanted_topics(connection: Any) -> frozenset[str]:
    """The signal topics some active endpoint wants events of (the durable writer's interest,
    see ``server.signals.durable_topics``); same cache as :func:`subscribed_types`."""
    subscribed = _subscriptions.get("types")
    if subscribed is None:
        subscribed = _remember_types(await connection.fetch(SUBSCRIBED_TYPES_SQL))
    return frozenset(
        topic for topic, types in TOPIC_EVENT_TYPES.items() if subscribed.intersection(types)
    )


def forget_subscriptions() -> None:
    """Re-read the subscribed event types on next use (after an endpoint changed)."""
    _subscriptions.clear()


# ---- signals -> events -----------------------------------------------------------------------

Mapper = Callable[[Session, list[Signal]], list[OutboxEvent]]


def _points_earned(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "points.earned",
            s.payload["member_id"],
            {
                "currency": s.payload["currency"],
                "amount": s.payload["amount"],
                "kind": s.payload.get("kind"),
                "transactionId": str(s.payload["transaction_id"]),
                "earnedAt": s.payload.get("at"),
            },
        )
        for s in batch
    ]


QUEST_PROGRESS_SQL = """
SELECT qp.id, q.key, qp.period_start, qp.period_end, qp.completed_at
FROM quest_progress qp JOIN quests q ON q.id = qp.quest_id
WHERE qp.id = any($1::bigint[])
"""


def _quest_completed(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    ids = sorted({int(pid) for s in batch for pid in s.payload.get("completed") or ()})
    if not ids:
        return []
    rows = {row["id"]: row for row in _fetch(session, QUEST_PROGRESS_SQL, ids)}
    events = []
    for s in batch:
        for progress_id in s.payload.get("completed") or ():
            row = rows.get(int(progress_id))
            if row is None:
                continue
            events.append(
                OutboxEvent(
                    "quest.completed",
                    s.payload["member_id"],
                    {
                        "questKey": row["key"],
                        "progressId": str(row["id"]),
                        "periodStart": row["period_start"],
                        "periodEnd": row["period_end"],
                        "completedAt": row["completed_at"] or s.payload.get("occurred_at"),
                        "eventId": str(s.payload["event_id"]),
                        "eventType": s.payload.get("type"),
                    },
                )
            )
    return events


def _member_registered(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "member.registered",
            s.payload["member_id"],
            {"displayName": s.payload.get("display_name"), "joinedAt": s.payload.get("at")},
        )
        for s in batch
    ]


def _tier_changed(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "tier.changed",
            s.payload["member_id"],
            {
                "fromTier": s.payload.get("from_tier"),
                "toTier": s.payload.get("to_tier"),
                "reason": s.payload.get("reason"),
                "changedAt": s.payload.get("at"),
            },
        )
        for s in batch
    ]


def _member_at_risk(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "member.at_risk",
            s.payload["member_id"],
            {
                "fromStage": s.payload.get("from_stage"),
                "stage": s.payload["to_stage"],
                "at": s.payload.get("at"),
            },
        )
        for s in batch
        if s.payload.get("to_stage") == "AT_RISK"
    ]


def _badge_awarded(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "badge.awarded",
            s.payload["member_id"],
            {
                "badgeKey": s.payload["badge_key"],
                "level": s.payload.get("level", 1),
                "awardedAt": s.payload.get("at"),
            },
        )
        for s in batch
    ]


def _title_granted(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            "title.granted",
            s.payload["member_id"],
            {
                "titleKey": s.payload["title_key"],
                "expiresAt": s.payload.get("expires_at"),
                "grantedAt": s.payload.get("at"),
            },
        )
        for s in batch
    ]


ITEM_KEYS_SQL = "SELECT id, key FROM catalog_items WHERE id = any($1::bigint[])"


def _redemption(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    missing = sorted({s.payload["item_id"] for s in batch if not s.payload.get("item_key")})
    keys: dict[int, str] = {}
    if missing:
        keys = {row["id"]: row["key"] for row in _fetch(session, ITEM_KEYS_SQL, missing)}
    events = []
    for s in batch:
        status = s.topic.rsplit(".", 1)[1].upper()
        data: dict[str, Any] = {
            "redemptionId": str(s.payload["redemption_id"]),
            "itemKey": s.payload.get("item_key") or keys.get(s.payload["item_id"]),
            "quantity": s.payload.get("quantity"),
            "cost": s.payload.get("cost"),
            "status": status,
            "at": s.payload.get("at"),
        }
        if s.topic == "redemption.cancelled":
            data["reason"] = s.payload.get("reason")
        events.append(OutboxEvent(s.topic, s.payload["member_id"], data))
    return events


EXPIRED_SQL = """
SELECT t.id, t.member_id, t.reference, t.created_at, p.currency, p.amount
FROM transactions t JOIN postings p ON p.transaction_id = t.id AND p.amount > 0
WHERE t.id = any($1::bigint[])
ORDER BY t.id
"""


def _points_expired(session: Session, batch: list[Signal]) -> list[OutboxEvent]:
    ids = [tx for s in batch for tx in s.payload["transactions"]]
    return [
        OutboxEvent(
            "points.expired",
            row["member_id"],
            {
                "currency": row["currency"],
                "amount": row["amount"],
                "transactionId": str(row["id"]),
                "lotId": row["reference"].removeprefix("lot:")
                if (row["reference"] or "").startswith("lot:")
                else None,
                "expiredAt": row["created_at"],
            },
        )
        for row in _fetch(session, EXPIRED_SQL, ids)
    ]


MAPPERS: dict[str, Mapper] = {
    "points.credited": _points_earned,
    "event.recorded": _quest_completed,
    "member.registered": _member_registered,
    "tier.changed": _tier_changed,
    "member.stage_changed": _member_at_risk,
    "badge.awarded": _badge_awarded,
    "title.granted": _title_granted,
    "redemption.created": _redemption,
    "redemption.fulfilled": _redemption,
    "redemption.cancelled": _redemption,
    "points.expired": _points_expired,
}
assert MAPPERS.keys() == TOPIC_EVENT_TYPES.keys()


# One statement: the events that have at least one subscribed endpoint (with the member's
# externalId added), and a pending delivery per (event, endpoint). Returns the deliveries.
INSERT_EVENTS_SQL = """
WITH input AS (
    SELECT x.id, x.type, x.member_id, x.data::jsonb AS data
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) AS x(id, type, member_id, data)
), targets AS (
    SELECT i.id, i.type, w.id AS webhook_id
    FROM input i JOIN webhooks w ON w.active AND i.type = any(w.events)
), inserted AS (
    INSERT INTO webhook_events (id, type, member_id, data)
    SELECT i.id, i.type, i.member_id,
           CASE WHEN i.member_id IS NULL THEN i.data
                ELSE i.data || jsonb_build_object('memberId', i.member_id::text,
                                                  'externalId', m.external_id) END
    FROM input i LEFT JOIN members m ON m.id = i.member_id
    WHERE i.id IN (SELECT t.id FROM targets t)
    RETURNING id
)
INSERT INTO webhook_deliveries (event_id, webhook_id, event_type, next_attempt_at)
SELECT t.id, t.webhook_id, t.type, now() FROM targets t
WHERE t.id IN (SELECT id FROM inserted)
RETURNING id
"""


def write_events(session: Session, events: Sequence[OutboxEvent]) -> list[int]:
    """Insert ``events`` (those some active endpoint subscribes to) and their deliveries;
    returns the new delivery ids."""
    if not events:
        return []
    rows = _fetch(
        session,
        INSERT_EVENTS_SQL,
        [uuid.uuid4() for _ in events],
        [e.type for e in events],
        [e.member_id for e in events],
        [dumps(e.data) for e in events],
    )
    return [row["id"] for row in rows]


def _write_signals(session: Session, batch: list[Signal]) -> None:
    """The durable signal writer (runs right before the commit, see ``server.signals``)."""
    subscribed = subscribed_types(session)
    if not subscribed:
        return
    by_topic: dict[str, list[Signal]] = defaultdict(list)
    for signal in batch:
        if subscribed.intersection(TOPIC_EVENT_TYPES[signal.topic]):
            by_topic[signal.topic].append(signal)
    events = [
        event
        for topic, signals_of_topic in by_topic.items()
        for event in MAPPERS[topic](session, signals_of_topic)
        if event.type in subscribed
    ]
    delivery_ids = write_events(session, events)
    if delivery_ids:
        schedule_delivery(session, delivery_ids)


def schedule_delivery(session: Session, delivery_ids: list[int]) -> None:
    """Send ``webhooks.deliver`` for these deliveries once the transaction has committed (when
    the session comes from ``Runtime.transaction``; otherwise the sweep picks them up)."""
    hooks = session.info.get("after_commit")
    if isinstance(hooks, list):
        hooks.append(partial(enqueue_deliveries, list(delivery_ids)))


async def enqueue_deliveries(delivery_ids: list[int]) -> None:
    from server.broker import enqueue
    from webhooks.tasks import deliver

    for start in range(0, len(delivery_ids), DELIVERIES_PER_MESSAGE):
        await enqueue(deliver.message(delivery_ids[start : start + DELIVERIES_PER_MESSAGE]))


signals.persist(TOPIC_EVENT_TYPES.keys(), _write_signals, wanted_topics)
