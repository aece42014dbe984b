"""Delivering webhook events: signed POSTs, retries with backoff and jitter, an attempt log.

Each delivery (one event to one endpoint) goes through ``pending`` -> ``delivered`` (a 2xx
answer) or ``failed`` (``QUESTLINE_WEBHOOK_MAX_ATTEMPTS`` attempts without one, or the
endpoint was deactivated). An attempt:

1. *claims* the delivery in a short transaction: ``attempts + 1`` and ``next_attempt_at`` moved
   a lease ahead (the request timeout plus a margin), only if it is pending and due. Two
   workers (a retry message and the sweep, say) cannot both claim it; a worker that dies
   mid-attempt leaves a lease that simply runs out, and the sweep tries again.
2. POSTs outside any transaction (nothing is locked while a slow receiver answers),
3. records the outcome in another short transaction: the attempt row, and the delivery's new
   state (delivered; failed; or pending with the next attempt after an exponential backoff
   with jitter), then sends itself a delayed ``webhooks.deliver`` for the retry. If that send
   is lost, ``webhooks.retry_due`` (every minute) finds the due delivery anyway.

At least once: a receiver can get an event twice (an answer lost on the way back, a lease that
ran out while the receiver was slow); the ``Questline-Event-Id`` header and the body's ``id``
are the same on every attempt, and receivers de-duplicate on it. Order is not guaranteed.

Requests: ``POST`` with the JSON body ``{"id", "type", "createdAt", "data"}`` and the headers
``Questline-Event-Id``, ``Questline-Event-Type``, ``Questline-Timestamp`` (unix seconds of this
attempt) and ``Questline-Signature: t=<timestamp>,v1=<hex HMAC-SHA256(secret,
"<timestamp>.<body>")>``. Receivers recompute the HMAC over the raw body and reject old
timestamps (``verify_signature`` is the reference implementation). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog

from server import rawsql
from server.runtime import Runtime
from server.settings import Settings
from webhooks.addresses import AddressRefused, Target, pinned_target
from webhooks.outbox import dumps

log = structlog.get_logger("questline.webhooks.delivery")

USER_AGENT = "Questline-Webhooks/1"
LEASE_MARGIN_SECONDS = 30.0
MAX_CONCURRENT_REQUESTS = 16
ERROR_TEXT_LIMIT = 300
SIGNATURE_TOLERANCE_SECONDS = 300


# ---- the wire format -------------------------------------------------------------------------


def event_body(event_id: uuid.UUID | str, event_type: str, created_at: datetime, data: Any) -> str:
    """The exact JSON sent (the same bytes on every attempt)."""
    return dumps(
        {"id": str(event_id), "type": event_type, "createdAt": created_at.isoformat(), "data": data}
    )


def sign(secret: str, timestamp: int, body: str) -> str:
    message = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: str) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: str | bytes,
    *,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does: parse ``t=..,v1=..``, recompute, compare in constant time, and
    refuse a timestamp more than ``tolerance`` seconds away (replays)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    text = body.decode() if isinstance(body, bytes) else body
    return hmac.compare_digest(sign(secret, timestamp, text), parts.get("v1", ""))


def backoff_seconds(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """The wait after failed attempt number ``attempt`` (1, 2, ...): exponential, capped, with
    "equal jitter" (between half and all of it) so failed deliveries do not retry in lockstep."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


# ---- claiming, attempting, recording ---------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    attempt: int
    url: str
    secret: str
    active: bool
    event_id: uuid.UUID
    event_type: str
    created_at: datetime
    data: Any

    @property
    def body(self) -> str:
        return event_body(self.event_id, self.event_type, self.created_at, self.data)


@dataclass(frozen=True)
class AttemptResult:
    claim: Claim
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


CLAIM_SQL = """
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => $2::float8)
FROM webhook_events e, webhooks w
WHERE d.id = any($1::bigint[]) AND d.status = 'pending' AND d.next_attempt_at <= now()
  AND e.id = d.event_id AND w.id = d.webhook_id
RETURNING d.id, d.attempts, w.url, w.secret, w.active, e.id AS event_id, e.type, e.created_at,
          e.data
"""

RECORD_SQL = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::int[], $6::text[],
                         $7::float8[])
           AS r(id, attempt, status_code, error, duration_ms, outcome, delay)
), logged AS (
    INSERT INTO webhook_delivery_attempts (delivery_id, attempt, status_code, error, duration_ms)
    SELECT id, attempt, status_code, error, duration_ms FROM r
)
UPDATE webhook_deliveries d
SET status = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
    next_attempt_at = CASE WHEN r.outcome = 'retry'
                           THEN now() + make_interval(secs => r.delay) END,
    last_status_code = r.status_code,
    last_error = r.error,
    delivered_at = CASE WHEN r.outcome = 'delivered' THEN now() END
FROM r
WHERE d.id = r.id AND d.status = 'pending'
  -- a late answer to an attempt whose lease ran out only counts if it is a success
  AND (d.attempts = r.attempt OR r.outcome = 'delivered')
RETURNING d.id, d.status
"""

DUE_SQL = """
SELECT id FROM webhook_deliveries
WHERE status = 'pending' AND next_attempt_at <= now()
ORDER BY next_attempt_at LIMIT $1
"""


def _claim_from(row: Any) -> Claim:
    data = row["data"]
    return Claim(
        delivery_id=row["id"],
        attempt=row["attempts"],
        url=row["url"],
        secret=row["secret"],
        active=row["active"],
        event_id=row["event_id"],
        event_type=row["type"],
        created_at=row["created_at"],
        data=json.loads(data) if isinstance(data, str) else data,
    )


async def claim(runtime: Runtime, delivery_ids: Sequence[int]) -> list[Claim]:
    lease = runtime.settings.webhook_timeout_seconds * 2 + LEASE_MARGIN_SECONDS
    async with runtime.transaction() as session:
        rows = await rawsql.fetch(session, CLAIM_SQL, list(delivery_ids), lease)
    return [_claim_from(row) for row in rows]


def _error_text(value: str) -> str:
    return value if len(value) <= ERROR_TEXT_LIMIT else value[: ERROR_TEXT_LIMIT - 1] + "…"


async def attempt(
    client: httpx.AsyncClient, claim: Claim, deadline: float, *, allow_private: bool = False
) -> AttemptResult:
    """One signed POST within ``deadline`` seconds overall (the client's own timeouts bound
    each read; this also bounds a receiver that trickles its answer). Never raises: a failure
    is the result. Unless ``allow_private``, the host must resolve to public addresses only,
    and the request goes to the address that was checked (webhooks.addresses)."""
    body = claim.body
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Questline-Event-Id": str(claim.event_id),
        "Questline-Event-Type": claim.event_type,
        "Questline-Timestamp": str(timestamp),
        "Questline-Signature": signature_header(claim.secret, timestamp, body),
        "Questline-Delivery-Attempt": str(claim.attempt),
    }
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(deadline):
            target = Target(claim.url) if allow_private else await pinned_target(claim.url)
            async with client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, **target.headers},
                extensions=target.extensions,
            ) as reply:
                status = reply.status_code
                if not 200 <= status < 300:
                    snippet = b""
                    async for chunk in reply.aiter_bytes():
                        snippet += chunk
                        if len(snippet) >= ERROR_TEXT_LIMIT:
                            break
                    text = snippet.decode(errors="replace").strip()
                    error = _error_text(f"HTTP {status}" + (f": {text}" if text else ""))
    except AddressRefused as exc:
        error = _error_text(f"refused: {exc}")
    except TimeoutError:
        error = "timed out"
    except httpx.TimeoutException as exc:
        error = _error_text(f"timed out ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        error = _error_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except Exception as exc:  # an invalid URL and the like: recorded, never raised
        error = _error_text(f"{type(exc).__name__}: {exc}")
    duration_ms = int((time.monotonic() - started) * 1000)
    return AttemptResult(claim, status, error, duration_ms)


@dataclass(frozen=True)
class Retry:
    delivery_id: int
    delay_seconds: float


def decide(result: AttemptResult, settings: Settings) -> tuple[str, float]:
    """(outcome, retry delay): ``delivered``, ``failed`` or ``retry``."""
    if result.ok:
        return "delivered", 0.0
    if not result.claim.active or result.claim.attempt >= settings.webhook_max_attempts:
        return "failed", 0.0
    delay = backoff_seconds(
        result.claim.attempt, settings.webhook_backoff_seconds, settings.webhook_backoff_max_seconds
    )
    return "retry", delay


async def record(
    runtime: Runtime, results: Sequence[AttemptResult]
) -> tuple[dict[int, str], list[Retry]]:
    """Log the attempts and move the deliveries on; returns the new statuses and the retries."""
    if not results:
        return {}, []
    decisions = [decide(result, runtime.settings) for result in results]
    async with runtime.transaction() as session:
        rows = await rawsql.fetch(
            session,
            RECORD_SQL,
            [r.claim.delivery_id for r in results],
            [r.claim.attempt for r in results],
            [r.status_code for r in results],
            [r.error for r in results],
            [r.duration_ms for r in results],
            [outcome for outcome, _ in decisions],
            [delay for _, delay in decisions],
        )
    statuses = {row["id"]: row["status"] for row in rows}
    retries = [
        Retry(result.claim.delivery_id, delay)
        for result, (outcome, delay) in zip(results, decisions, strict=True)
        if outcome == "retry" and statuses.get(result.claim.delivery_id) == "pending"
    ]
    return statuses, retries


def new_client(settings: Settings) -> httpx.AsyncClient:
    timeout = settings.webhook_timeout_seconds
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        follow_redirects=False,
        trust_env=False,  # no proxies from the environment: deliveries go where admins said
    )


async def deliver(
    runtime: Runtime,
    delivery_ids: Sequence[int],
    *,
    client: httpx.AsyncClient | None = None,
    schedule_retries: bool = True,
) -> list[AttemptResult]:
    """Attempt every given delivery that is pending and due (the others are skipped)."""
    claims = await claim(runtime, delivery_ids)
    if not claims:
        return []
    own_client = client is None
    http = client or new_client(runtime.settings)
    limit = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
    deadline = runtime.settings.webhook_timeout_seconds * 2
    allow_private = runtime.settings.webhook_allow_private_addresses

    async def one(item: Claim) -> AttemptResult:
        if not item.active:
            return AttemptResult(item, None, "endpoint deactivated", 0)
        async with limit:
            return await attempt(http, item, deadline, allow_private=allow_private)

    try:
        results = list(await asyncio.gather(*(one(item) for item in claims)))
    finally:
        if own_client:
            await http.aclose()
    _, retries = await record(runtime, results)
    for result in results:
        log.info(
            "webhook attempt",
            delivery=result.claim.delivery_id,
            event_id=str(result.claim.event_id),
            type=result.claim.event_type,
            attempt=result.claim.attempt,
            status=result.status_code,
            error=result.error,
        )
    if schedule_retries and retries:
        await _send_retries(retries)
    return results


async def _send_retries(retries: Sequence[Retry]) -> None:
    from server.broker import enqueue
    from webhooks.tasks import deliver as deliver_actor

    for retry in retries:
        try:
            message = deliver_actor.message([retry.delivery_id])
            await enqueue(message, delay=int(retry.delay_seconds * 1000))
        except Exception:  # the sweep (webhooks.retry_due) retries it when due anyway
            log.warning("could not schedule a webhook retry", delivery=retry.delivery_id)


async def due_deliveries(runtime: Runtime, limit: int) -> list[int]:
    async with runtime.read_sessionmaker() as session:
        rows = await rawsql.fetch(session, DUE_SQL, limit)
    return [row["id"] for row in rows]


async def deliver_due(
    runtime: Runtime,
    *,
    batch_size: int = 200,
    max_batches: int = 20,
    client: httpx.AsyncClient | None = None,
    schedule_retries: bool = True,
) -> int:
    """The sweep: attempt deliveries that are due (new ones nobody sent, retries whose message
    was lost, attempts whose lease ran out). Returns how many attempts were made."""
    attempts = 0
    for _ in range(max_batches):
        ids = await due_deliveries(runtime, batch_size)
        if not ids:
            break
        results = await deliver(runtime, ids, client=client, schedule_retries=schedule_retries)
        attempts += len(results)
        if len(ids) < batch_size:
            break
    return attempts
