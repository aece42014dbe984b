"""Webhook endpoints (upsert keyed by URL), the delivery log, and the scheduled producers:
``announce_expiring`` (points.expiring) and ``prune`` (old finished deliveries)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import func

from server import rawsql
from server.errors import DomainError, ErrorCode, invalid, not_found
from server.runtime import after_commit
from webhooks import outbox
from webhooks.addresses import literal_refusal
from webhooks.events import EVENT_TYPES
from webhooks.models import DELIVERY_STATUSES, Webhook, WebhookDeliveryAttempt

MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 255


@dataclass(frozen=True)
class WebhookInput:
    url: str
    events: Sequence[str]
    secret: str
    active: bool = True


def validate_url(url: str, *, allow_private: bool = False) -> str:
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise invalid(f"url must be 1 to {MAX_URL_LENGTH} characters", "url")
    if any(c.isspace() for c in url):
        raise invalid("url must not contain whitespace", "url")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise invalid("url is not a valid URL", "url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("url must be an absolute http:// or https:// URL", "url")
    if port == 0:
        raise invalid("url has an invalid port", "url")
    refusal = None if allow_private else literal_refusal(url)
    if refusal is not None:
        raise invalid(f"url must point to a public address: {refusal}", "url")
    return url


def validate_events(events: Sequence[str]) -> list[str]:
    cleaned = list(dict.fromkeys(e.strip() for e in events))
    if not cleaned:
        raise invalid("subscribe to at least one event", "events")
    unknown = [e for e in cleaned if e not in EVENT_TYPES]
    if unknown:
        raise invalid(
            f"unknown event type(s) {', '.join(repr(e) for e in unknown)}; "
            f"known: {', '.join(EVENT_TYPES)}",
            "events",
        )
    return cleaned


def validate_secret(secret: str) -> str:
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise invalid(
            f"secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters", "secret"
        )
    return secret


async def upsert_webhook(
    session: AsyncSession, data: WebhookInput, *, allow_private: bool = False
) -> Webhook:
    """Create the endpoint for ``data.url`` or replace its events, secret and state.
    ``allow_private``: accept localhost and private IP literals (see webhooks.addresses)."""
    url = validate_url(data.url, allow_private=allow_private)
    values = {
        "events": validate_events(data.events),
        "secret": validate_secret(data.secret),
        "active": data.active,
    }
    statement = insert(Webhook).values(url=url, **values)
    webhook_id = await session.scalar(
        statement.on_conflict_do_update(
            index_elements=[Webhook.url], set_={**values, "updated_at": func.now()}
        ).returning(Webhook.id)
    )
    outbox.forget_subscriptions()  # this transaction's own commits must see it at once

    async def refresh() -> None:
        outbox.forget_subscriptions()

    after_commit(session, refresh)
    return await session.get_one(Webhook, webhook_id, populate_existing=True)


async def list_webhooks(session: AsyncSession) -> list[Webhook]:
    return list(await session.scalars(select(Webhook).order_by(Webhook.id)))


async def webhooks_by_ids(session: AsyncSession, ids: Sequence[int]) -> dict[int, Webhook]:
    rows = await session.scalars(select(Webhook).where(Webhook.id.in_(list(ids))))
    return {row.id: row for row in rows}


# ---- the delivery log ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_id: uuid.UUID
    event_type: str
    webhook_id: int
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    event_created_at: datetime
    data: Any


DELIVERY_COLUMNS = """
SELECT d.id, d.event_id, d.event_type, d.webhook_id, d.status, d.attempts, d.next_attempt_at,
       d.last_attempt_at, d.last_status_code, d.last_error, d.delivered_at, d.created_at,
       e.created_at AS event_created_at, e.data
FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
"""


def _delivery(row: Any) -> DeliveryRow:
    data = row["data"]
    return DeliveryRow(
        **{k: row[k] for k in DeliveryRow.__dataclass_fields__ if k != "data"},
        data=json.loads(data) if isinstance(data, str) else data,
    )


async def list_deliveries(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None = None,
    status: str | None = None,
    event_type: str | None = None,
    webhook_id: int | None = None,
    event_id: uuid.UUID | None = None,
) -> list[DeliveryRow]:
    """Newest first, keyset-paginated on the id (``before_id``); fetch ``limit`` rows."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise invalid(f"status must be one of {', '.join(DELIVERY_STATUSES)}", "status")
    conditions, args = [], []
    for column, value in (
        ("d.id <", before_id),
        ("d.status =", status),
        ("d.event_type =", event_type),
        ("d.webhook_id =", webhook_id),
        ("d.event_id =", event_id),
    ):
        if value is not None:
            args.append(value)
            conditions.append(f"{column} ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    sql = f"{DELIVERY_COLUMNS} {where} ORDER BY d.id DESC LIMIT ${len(args)}"
    return [_delivery(row) for row in await rawsql.fetch(session, sql, *args)]


async def get_delivery(session: AsyncSession, delivery_id: int) -> DeliveryRow | None:
    rows = await rawsql.fetch(session, f"{DELIVERY_COLUMNS} WHERE d.id = $1", delivery_id)
    return _delivery(rows[0]) if rows else None


async def attempts_of(
    session: AsyncSession, delivery_ids: Sequence[int]
) -> dict[int, list[WebhookDeliveryAttempt]]:
    rows = await session.scalars(
        select(WebhookDeliveryAttempt)
        .where(WebhookDeliveryAttempt.delivery_id.in_(list(delivery_ids)))
        .order_by(WebhookDeliveryAttempt.delivery_id, WebhookDeliveryAttempt.id)
    )
    found: dict[int, list[WebhookDeliveryAttempt]] = {i: [] for i in delivery_ids}
    for row in rows:
        found[row.delivery_id].append(row)
    return found


async def retry_delivery(session: AsyncSession, delivery_id: int) -> int:
    """Make a failed (or pending) delivery due now, for one more attempt; returns its id."""
    row = await rawsql.fetchrow(
        session,
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now()"
        " WHERE id = $1 AND status <> 'delivered' RETURNING id",
        delivery_id,
    )
    if row is None:
        exists = await rawsql.fetchval(
            session, "SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id
        )
        if exists is None:
            raise not_found("no such webhook delivery", "deliveryId")
        raise DomainError(ErrorCode.ALREADY_DONE, "this delivery succeeded", "deliveryId")
    from webhooks.outbox import enqueue_deliveries

    async def send() -> None:
        await enqueue_deliveries([delivery_id])

    after_commit(session, send)
    return int(row["id"])


# ---- scheduled producers ---------------------------------------------------------------------

# Lots with points left that expire within the window, after the cursor (expires_at, id), not
# announced yet: one event each (dedupe_key), one delivery per subscribed endpoint.
ANNOUNCE_EXPIRING_SQL = """
WITH due AS (
    SELECT l.id AS lot_id, l.remaining, l.expires_at, a.member_id, a.currency
    FROM lots l JOIN accounts a ON a.id = l.account_id
    WHERE l.remaining > 0 AND l.expires_at IS NOT NULL
      AND l.expires_at > $1 AND l.expires_at <= $2
      AND (l.expires_at, l.id) > ($3::timestamptz, $4::bigint)
      AND a.member_id IS NOT NULL
    ORDER BY l.expires_at, l.id
    LIMIT $5
), inserted AS (
    INSERT INTO webhook_events (id, type, member_id, data, dedupe_key)
    SELECT gen_random_uuid(), 'points.expiring', d.member_id,
           jsonb_build_object('memberId', d.member_id::text, 'externalId', m.external_id,
                              'currency', d.currency, 'amount', d.remaining,
                              'expiresAt', d.expires_at, 'lotId', d.lot_id::text),
           'points.expiring:lot:' || d.lot_id
    FROM due d LEFT JOIN members m ON m.id = d.member_id
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
), delivered AS (
    INSERT INTO webhook_deliveries (event_id, webhook_id, event_type, next_attempt_at)
    SELECT i.id, w.id, 'points.expiring', now()
    FROM inserted i CROSS JOIN webhooks w
    WHERE w.active AND 'points.expiring' = any(w.events)
    RETURNING id
)
SELECT (SELECT count(*) FROM due) AS scanned,
       (SELECT max(expires_at) FROM due) AS last_expires_at,
       (SELECT max(lot_id) FROM due d WHERE d.expires_at = (SELECT max(expires_at) FROM due))
           AS last_lot_id,
       (SELECT count(*) FROM inserted) AS announced,
       (SELECT coalesce(array_agg(id), '{}') FROM delivered) AS delivery_ids
"""

SUBSCRIBED_SQL = "SELECT EXISTS (SELECT 1 FROM webhooks WHERE active AND $1 = any(events))"


@dataclass(frozen=True)
class Announced:
    scanned: int
    announced: int
    delivery_ids: list[int]
    cursor: tuple[datetime, int] | None


async def announce_expiring_batch(
    session: AsyncSession,
    now: datetime,
    days: int,
    *,
    after: tuple[datetime, int] | None = None,
    limit: int = 5000,
) -> Announced:
    """One batch of points.expiring events (nothing when no endpoint subscribes)."""
    if not await rawsql.fetchval(session, SUBSCRIBED_SQL, "points.expiring"):
        return Announced(0, 0, [], None)
    start = after or (now, 0)
    row = await rawsql.fetchrow(
        session, ANNOUNCE_EXPIRING_SQL, now, now + timedelta(days=days), start[0], start[1], limit
    )
    cursor = (row["last_expires_at"], row["last_lot_id"]) if row["scanned"] else None
    return Announced(row["scanned"], row["announced"], list(row["delivery_ids"]), cursor)


PRUNE_SQL = """
WITH old AS (
    SELECT e.id FROM webhook_events e
    WHERE e.created_at < $1
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                      WHERE d.event_id = e.id AND d.status = 'pending')
    ORDER BY e.created_at
    LIMIT $2
)
DELETE FROM webhook_events e USING old WHERE e.id = old.id
"""


async def prune_batch(session: AsyncSession, before: datetime, limit: int = 5000) -> int:
    """Delete up to ``limit`` events older than ``before`` whose deliveries are all finished
    (their deliveries and attempts go with them)."""
    status = await rawsql.execute(session, PRUNE_SQL, before, limit)
    return int(status.rsplit(" ", 1)[-1])
