"""Live leaderboard updates and live-update messages, from the facts a commit announces.

Subscribed to ``points.credited`` (the ledger) and ``event.recorded`` (the event pipeline),
which ``server.signals`` delivers after the commit, a whole transaction's batch at once. Per
batch: the affected period keys of every matching board are updated by ONE script call, and
the member and board channels are published to, all in ONE pipelined round trip.
``points.moved`` (spends, deductions, transfers, vests, reversals, expiry), ``badge.awarded``,
``title.granted`` and ``tier.changed`` only feed the members' live updates
(``memberUpdates``).

Redis down: the handler logs a warning and marks the boards it could not update as stale in
PostgreSQL (``leaderboards.stale_since``); the committed data is untouched and the
maintenance job rebuilds those boards once Redis answers again.

The handlers need the process's Runtime: the API binds its own (``bind``, from the app's
start-up); elsewhere (workers, CLI commands) the process's worker runtime is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from leaderboards import clock, keys, live, store
from leaderboards.encoding import slot_of
from leaderboards.service import (
    EVENT_COUNT,
    METRIC_OF_CURRENCY,
    BoardDef,
    boards_for_reading,
    expire_at,
    forget_windows,
    read_session,
    reader,
    timezone_for_reading,
)
from ledger.service import CREDITED, MOVED
from quests.events import EVENT_RECORDED
from server import signals
from server.runtime import Runtime

log = structlog.get_logger("questline.leaderboards.updates")

_bound: tuple[Runtime, asyncio.AbstractEventLoop | None] | None = None


def bind(runtime: Runtime) -> None:
    """Use ``runtime`` (its Redis and database) for live updates in this process when a batch
    arrives without one, on the event loop running now (connections belong to one loop)."""
    global _bound
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    _bound = (runtime, loop)


def unbind(runtime: Runtime) -> None:
    global _bound
    if _bound is not None and _bound[0] is runtime:
        _bound = None


async def current_runtime() -> Runtime:
    delivering: Runtime | None = signals.delivering_runtime()
    if delivering is not None:  # the runtime whose transaction committed these facts
        return delivering
    if _bound is not None and _bound[1] in (None, asyncio.get_running_loop()):
        return _bound[0]
    from server.broker import worker_runtime

    return await worker_runtime()


async def _context(runtime: Runtime) -> tuple[list[BoardDef], str]:
    """Active boards and the program timezone, from caches (a session only on a miss)."""
    boards = [b for b in await boards_for_reading(reader(runtime)) if b.active]
    return boards, await timezone_for_reading(reader(runtime))


def _fact(
    board: BoardDef, timezone: str, member_id: int, amount: int, at: datetime, source: str
) -> tuple[store.Fact, str] | None:
    period = board.period_at(at, timezone)
    deadline = expire_at(period)
    if deadline and deadline <= clock.now().timestamp():
        return None  # that period's key is gone (a very late event): nothing to update
    fact = store.Fact(
        key=board.redis_key(period),
        member_id=member_id,
        amount=amount,
        slot=slot_of(period, at),
        expire_at=deadline,
        source=source,
    )
    return fact, period.id


async def _send(
    runtime: Runtime,
    facts: list[store.Fact],
    touched: dict[BoardDef, str],
    messages: list[tuple[str, str]],
) -> None:
    publish = messages + [
        (keys.board_channel(runtime.redis, board.key), live.encode({"period": period_id}))
        for board, period_id in touched.items()
    ]
    try:
        await store.apply(runtime.redis, facts, publish)
        if facts:
            forget_windows()
    except RedisError as error:
        log.warning(
            "leaderboards not updated: Redis unavailable; boards marked stale",
            error=str(error),
            boards=[board.key for board in touched],
        )
        await mark_stale(runtime, (board.id for board in touched))


async def mark_stale(runtime: Runtime, board_ids: Iterable[int]) -> None:
    ids = sorted(set(board_ids))
    if not ids:
        return
    try:
        async with runtime.sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE leaderboards SET stale_since = now() WHERE id = ANY(:ids)"),
                {"ids": ids},
            )
    except Exception:
        log.exception("could not mark leaderboards stale")


async def on_points_credited(batch: list[signals.Signal]) -> None:
    runtime = await current_runtime()
    boards, timezone = await _context(runtime)
    facts: list[store.Fact] = []
    touched: dict[BoardDef, str] = {}
    messages: list[tuple[str, str]] = []
    for signal in batch:
        payload = signal.payload
        member_id, currency, amount = payload["member_id"], payload["currency"], payload["amount"]
        at: datetime = payload["at"]
        metric = METRIC_OF_CURRENCY.get(currency)
        for board in boards:
            if board.metric != metric:
                continue
            made = _fact(board, timezone, member_id, amount, at, f"t:{payload['transaction_id']}")
            if made is not None:
                facts.append(made[0])
                touched[board] = made[1]
        messages.append(
            (
                keys.member_channel(runtime.redis, member_id),
                live.encode(
                    {
                        "kind": "credit",
                        "currency": currency,
                        "amount": amount,
                        "transactionId": payload["transaction_id"],
                        "txKind": payload.get("kind"),
                        "at": at.isoformat(),
                    }
                ),
            )
        )
    await _send(runtime, facts, touched, messages)


async def on_event_recorded(batch: list[signals.Signal]) -> None:
    runtime = await current_runtime()
    boards, timezone = await _context(runtime)
    facts: list[store.Fact] = []
    touched: dict[BoardDef, str] = {}
    messages: list[tuple[str, str]] = []
    for signal in batch:
        payload = signal.payload
        member_id, event_type = payload["member_id"], payload["type"]
        at: datetime = payload["occurred_at"]
        for board in boards:
            if board.metric != EVENT_COUNT or board.event_type != event_type:
                continue
            made = _fact(board, timezone, member_id, 1, at, f"e:{payload['event_id']}")
            if made is not None:
                facts.append(made[0])
                touched[board] = made[1]
        if payload.get("completed"):
            messages.append(
                (
                    keys.member_channel(runtime.redis, member_id),
                    live.encode(
                        {
                            "kind": "event",
                            "eventId": payload["event_id"],
                            "type": event_type,
                            "completed": list(payload["completed"]),
                            "at": at.isoformat(),
                        }
                    ),
                )
            )
    await _send(runtime, facts, touched, messages)


def _member_message(topic: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The live-update message of a fact about one member (None: nothing to tell)."""
    at = payload.get("at")
    when = at.isoformat() if isinstance(at, datetime) else at
    if topic == BADGE_AWARDED:
        return {"kind": "badge", "badgeKey": payload.get("badge_key"),
                "level": payload.get("level"), "at": when}  # fmt: skip
    if topic == TITLE_GRANTED:
        return {"kind": "title", "titleKey": payload.get("title_key"), "at": when}
    if topic == TIER_CHANGED:
        return {"kind": "tier", "toTier": payload.get("to_tier"),
                "fromTier": payload.get("from_tier"), "reason": payload.get("reason"),
                "at": when}  # fmt: skip
    return None  # balance changes come from the ledger itself (on_points_moved)


async def on_member_fact(batch: list[signals.Signal]) -> None:
    """Badges, titles, tier changes, redemptions: publish to the member's channel."""
    found = [
        (signal.payload["member_id"], message)
        for signal in batch
        if signal.payload.get("member_id") is not None
        and (message := _member_message(signal.topic, signal.payload)) is not None
    ]
    if not found:
        return
    runtime = await current_runtime()
    messages = [
        (keys.member_channel(runtime.redis, member_id), live.encode(message))
        for member_id, message in found
    ]
    try:
        await store.apply(runtime.redis, [], messages)
    except RedisError as error:  # live updates are best effort; nothing to repair
        log.warning("live updates not published: Redis unavailable", error=str(error))


BADGE_AWARDED, TITLE_GRANTED, TIER_CHANGED = "badge.awarded", "title.granted", "tier.changed"
MEMBER_TOPICS = (BADGE_AWARDED, TITLE_GRANTED, TIER_CHANGED)

# The change of each member's available balance in these transactions.
MEMBER_POSTINGS_SQL = text(
    """
    SELECT a.member_id, a.currency, p.transaction_id, sum(p.amount) AS amount
    FROM postings p JOIN accounts a ON a.id = p.account_id
    WHERE p.transaction_id = ANY(:transactions) AND a.member_id IS NOT NULL
      AND a.kind = 'available'
    GROUP BY a.member_id, a.currency, p.transaction_id
    HAVING sum(p.amount) <> 0
    """
)


async def on_points_moved(batch: list[signals.Signal]) -> None:
    """Spends, deductions, transfers, vests, reversals, expiry: tell each member whose
    available balance changed (one query for the transactions whose members are not known)."""
    runtime = await current_runtime()
    changes: list[tuple[int, str, int, int | None, datetime]] = []
    look_up: dict[int, datetime] = {}
    for signal in batch:
        payload = signal.payload
        for member_id, currency, amount in payload["changes"]:
            changes.append((member_id, currency, amount, payload.get("transaction_id"),
                            payload["at"]))  # fmt: skip
        look_up.update(dict.fromkeys(payload["transactions"], payload["at"]))
    if look_up:
        try:
            async with read_session(runtime) as session:
                rows = await session.execute(MEMBER_POSTINGS_SQL, {"transactions": list(look_up)})
                changes += [(m, c, int(a), t, look_up[t]) for m, c, t, a in rows]
        except (SQLAlchemyError, OSError) as error:  # best effort, like every live update
            log.warning("balance updates not published: database unavailable", error=str(error))
    messages = [
        (
            keys.member_channel(runtime.redis, member_id),
            live.encode(
                {
                    "kind": "balance",
                    "currency": currency,
                    "amount": amount,
                    "transactionId": transaction,
                    "at": at.isoformat(),
                }
            ),
        )
        for member_id, currency, amount, transaction, at in changes
    ]
    if not messages:
        return
    try:
        await store.apply(runtime.redis, [], messages)
    except RedisError as error:
        log.warning("live updates not published: Redis unavailable", error=str(error))


def install() -> None:
    """Subscribe the handlers (idempotent); done when this module is imported."""
    signals.subscribe(CREDITED, on_points_credited)
    signals.subscribe(EVENT_RECORDED, on_event_recorded)
    signals.subscribe(MOVED, on_points_moved)
    for topic in MEMBER_TOPICS:
        signals.subscribe(topic, on_member_fact)


install()
