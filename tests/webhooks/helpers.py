"""Webhook test helpers: a real HTTP receiver on the loopback interface, endpoints, and reads
of the outbox and the delivery log."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from server.runtime import Runtime
from webhooks import service
from webhooks.events import EVENT_TYPES
from webhooks.models import Webhook

SECRET = "test-webhook-secret-0123456789"


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_id(self) -> str:
        return self.headers["questline-event-id"]


class Receiver:
    """An HTTP server on 127.0.0.1 (a free port) in a thread. It records every request and
    fails the first ``fail_first`` attempts of each event (``status_when_failing``), then
    answers 200: a receiver that is down for a while and recovers."""

    def __init__(self, fail_first: int = 0, status_when_failing: int = 503) -> None:
        self.fail_first = fail_first
        self.status_when_failing = status_when_failing
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    event_id = headers.get("questline-event-id", "")
                    receiver._seen[event_id] += 1
                    failing = receiver._seen[event_id] <= receiver.fail_first
                    status = receiver.status_when_failing if failing else 200
                    receiver.received.append(Received(headers, body, status))
                reply = b"temporarily down" if failing else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)


@contextmanager
def receiving(fail_first: int = 0, status_when_failing: int = 503) -> Iterator[Receiver]:
    receiver = Receiver(fail_first, status_when_failing).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def fast_retries(runtime: Runtime, **overrides: Any) -> Runtime:
    """The same engine and Redis with quick retries (tests cannot wait minutes)."""
    settings = runtime.settings.model_copy(
        update={
            "webhook_backoff_seconds": 0.05,
            "webhook_backoff_max_seconds": 0.2,
            "webhook_max_attempts": 5,
            "webhook_timeout_seconds": 2.0,
            **overrides,
        }
    )
    return replace(runtime, settings=settings)


async def subscribe(
    runtime: Runtime,
    url: str,
    events: list[str] | None = None,
    *,
    secret: str = SECRET,
    active: bool = True,
) -> Webhook:
    async with runtime.transaction() as session:
        return await service.upsert_webhook(
            session,
            service.WebhookInput(
                url=url, events=events or list(EVENT_TYPES), secret=secret, active=active
            ),
            allow_private=runtime.settings.webhook_allow_private_addresses,
        )


async def outbox(runtime: Runtime) -> list[dict[str, Any]]:
    """Every event written, oldest first, with how many deliveries each has."""
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text(
                "SELECT e.id, e.type, e.member_id, e.data, e.dedupe_key,"
                " (SELECT count(*) FROM webhook_deliveries d WHERE d.event_id = e.id) AS deliveries"
                " FROM webhook_events e ORDER BY e.created_at, e.type"
            )
        )
        return [dict(row._mapping) for row in rows]


async def types_of(runtime: Runtime) -> list[str]:
    return sorted(event["type"] for event in await outbox(runtime))


async def deliveries(runtime: Runtime) -> list[dict[str, Any]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(text("SELECT * FROM webhook_deliveries ORDER BY id"))
        return [dict(row._mapping) for row in rows]


async def attempts(runtime: Runtime) -> list[dict[str, Any]]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text("SELECT * FROM webhook_delivery_attempts ORDER BY delivery_id, id")
        )
        return [dict(row._mapping) for row in rows]


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, step: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(step)
