"""The Starlette application: GraphQL (HTTP and WebSocket), health, readiness, metrics."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UnsetType

from leaderboards import updates as live_updates
from leaderboards.live import close_hubs
from schema.context import Context
from schema.root import build_schema
from server import public_cache, ratelimit
from server.auth import ANONYMOUS, AuthError, Principal, authenticate
from server.observability import RequestContextMiddleware, configure_logging, metrics_endpoint
from server.runtime import Runtime
from server.settings import Settings, get_settings

log = structlog.get_logger("questline.app")

PLAIN_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
PLAIN_OPERATIONS = frozenset({OperationType.QUERY, OperationType.MUTATION})


class QuestlineGraphQL(GraphQL[Context, None]):
    """strawberry's ASGI app with our context, authentication and JSON encoding."""

    def encode_json(self, data: object) -> str:
        """Compact JSON, as strawberry's own encoder writes it, by orjson (about a fifteenth
        of the CPU of ``json.dumps`` for a leaderboard answer). What orjson refuses (an
        integer beyond 64 bits in a client's JSON properties, a key that is not a string)
        falls back to the standard library. orjson writes non-ASCII characters as UTF-8, not
        as escapes. A str, not bytes: strawberry sends bytes over a WebSocket as a binary
        frame, and graphql-transport-ws clients (a browser's graphql-ws among them) read
        text only."""
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            return json.dumps(data, separators=(",", ":"))

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        runtime: Runtime = request.app.state.runtime
        principal: Principal = getattr(request.state, "principal", ANONYMOUS)
        return Context(runtime=runtime, request=request, response=response, principal=principal)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """WebSocket clients authenticate with ``{"Authorization": "Bearer ..."}`` in the
        ``connection_init`` payload (browsers cannot set headers on WebSockets)."""
        params = context.connection_params or {}
        header = params.get("Authorization") or params.get("authorization")
        try:
            context.principal = await authenticate(
                context.runtime.settings,
                context.runtime.sessionmaker,
                header if isinstance(header, str) else None,
            )
        except AuthError as exc:
            raise ConnectionRejectionError(
                {"code": "UNAUTHENTICATED", "message": str(exc)}
            ) from exc
        return None


def error_response(
    message: str, code: str, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A GraphQL-shaped refusal made before GraphQL runs."""
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
    )


def unauthenticated_response(message: str) -> JSONResponse:
    return error_response(message, "UNAUTHENTICATED", 401, {"WWW-Authenticate": "Bearer"})


class GraphQLEndpoint:
    """Authenticates HTTP requests before GraphQL runs: a bad token is a 401, not a 500; then
    applies the caller's rate limit (429 when over it; see ``server.ratelimit``), refuses a
    body over ``max_request_bytes`` (413), and answers anonymous reads of public data from
    ``server.public_cache`` when it can."""

    def __init__(self, graphql: QuestlineGraphQL) -> None:
        self.graphql = graphql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            runtime: Runtime = request.app.state.runtime
            try:
                principal = await authenticate(
                    runtime.settings, runtime.sessionmaker, request.headers.get("authorization")
                )
            except AuthError as exc:
                # failed credentials count against the client's address, like anonymous calls
                limited = await ratelimit.check(request, runtime.settings, runtime.redis, ANONYMOUS)
                if limited is not None and not limited.allowed:
                    await ratelimit.refusal(limited)(scope, receive, send)
                else:
                    await unauthenticated_response(str(exc))(scope, receive, send)
                return
            request.state.principal = principal
            decision = await ratelimit.check(request, runtime.settings, runtime.redis, principal)
            if decision is not None and not decision.allowed:
                await ratelimit.refusal(decision)(scope, receive, send)
                return
            send = ratelimit.with_headers(send, decision)
            if scope["method"] == "POST":
                try:
                    body = await read_body(request, runtime.settings.max_request_bytes)
                except ClientDisconnect:  # gone before the body arrived: no one to answer
                    return
                if body is None:
                    await too_large_response(runtime.settings.max_request_bytes)(
                        scope, receive, send
                    )
                    return
                if principal is ANONYMOUS and runtime.settings.public_response_cache:
                    await self.public_read(scope, receive, body, send)
                    return
                receive = replay(body, receive)
                if await self.plain_post(request, body, receive, send):
                    return
        await self.graphql(scope, receive, send)

    async def plain_post(self, request: Request, body: bytes, receive: Receive, send: Send) -> bool:
        """Run a plain JSON POST (one operation, no streaming asked for) straight through
        the schema, with strawberry's own context, result processing and response; False
        (nothing done) for anything else, which strawberry's view then handles whole.

        The view's own path re-reads and re-parses the body and walks its content-type,
        batching, upload, IDE and transport checks on every request: skipping them took 5 %
        off the in-process CPU of a ``me`` request (README, Performance)."""
        plain = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        accept = request.headers.get("accept", "")
        if plain != "application/json" or "multipart/" in accept or "event-stream" in accept:
            return False
        try:
            data = json.loads(body)  # not orjson: it reads an integer beyond 64 bits as a float
        except ValueError:
            return False
        if not isinstance(data, dict) or not data.keys() <= PLAIN_KEYS:
            return False
        query, variables = data.get("query"), data.get("variables")
        name, extensions = data.get("operationName"), data.get("extensions")
        if not (
            isinstance(query, str)
            and isinstance(variables, dict | None)
            and isinstance(name, str | None)
            and isinstance(extensions, dict | None)
        ):
            return False
        view = self.graphql
        sub_response = await view.get_sub_response(request)
        context = await view.get_context(request, response=sub_response)
        try:
            result = await view.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=name,
                allowed_operation_types=PLAIN_OPERATIONS,
                operation_extensions=extensions,
            )
        except (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError):
            return False  # refused before anything ran: the view answers with its 400
        if not isinstance(result, ExecutionResult):
            return False  # pragma: no cover - execute() returns results for queries/mutations
        response = view.create_response(await view.process_result(request, result), sub_response)
        await response(request.scope, receive, send)
        return True

    async def public_read(self, scope: Scope, receive: Receive, body: bytes, send: Send) -> None:
        """An anonymous POST: the last identical response while it is fresh (see
        ``server.public_cache``), else GraphQL, keeping its response when it may be reused."""
        cached = public_cache.get(body) or await public_cache.wait_for(body)
        if cached is not None:
            await send_json(send, cached)
            return
        status = 0
        chunks: list[bytes] = []

        async def keeping(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        with public_cache.leading(body) as leader:
            await self.graphql(scope, replay(body, receive), keeping)
            max_age = scope.get("state", {}).get("public_max_age", 0.0)
            if status == 200 and max_age > 0:
                response = b"".join(chunks)
                public_cache.put(body, response, max_age)
                leader.share(response)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The whole request body, or None once it is longer than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands GraphQL the body already read, then listens to the client
    (whose next message can only be its disconnection)."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying


async def send_json(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def too_large_response(limit: int) -> JSONResponse:
    return error_response(
        f"The request body is larger than {limit} bytes.", "PAYLOAD_TOO_LARGE", 413
    )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when PostgreSQL and Redis both answer within a second."""
    runtime: Runtime = request.app.state.runtime
    problems: dict[str, str] = {}
    try:
        async with asyncio.timeout(1.0), runtime.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        problems["postgres"] = f"{type(exc).__name__}: {exc}"[:200] or "timeout"
    try:
        async with asyncio.timeout(1.0):
            await runtime.redis.ping()
    except Exception as exc:
        problems["redis"] = f"{type(exc).__name__}: {exc}"[:200] or "timeout"
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


YOUNG_COLLECTION_THRESHOLD = 7_000  # tracked allocations; Python's default is 700


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Starlette:
    """The ASGI app. With no ``runtime`` one is built from settings at start-up (lifespan)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    graphql = QuestlineGraphQL(build_schema(settings), keep_alive=True)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = runtime or await Runtime.start(settings)
        live_updates.bind(app.state.runtime)  # leaderboards and subscriptions after commits
        if own:
            # The app owns its process (``questline serve``): what was built at start-up
            # (schema, modules, pools) lives as long as the process. Moved out of the
            # collector's sight, it is no longer scanned by every full collection, which
            # otherwise stalled requests for tens of milliseconds (top-10 leaderboard p99 went
            # from ~150 to ~60 ms under load). An app on a borrowed runtime (tests, embedding)
            # freezes nothing: there, objects alive now may be garbage later.
            gc.collect()
            gc.freeze()
            # Requests leave no reference cycles (schema/execution.py), so a young collection
            # finds nothing to free: it only walks the objects of the requests in flight.
            # Collecting ten times less often saves that walk.
            gc.set_threshold(YOUNG_COLLECTION_THRESHOLD)
        try:
            yield
        finally:
            await close_hubs()
            live_updates.unbind(app.state.runtime)
            if own:
                await app.state.runtime.close()

    app = Starlette(
        routes=[
            Route("/graphql", GraphQLEndpoint(graphql), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
        ],
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
        live_updates.bind(runtime)
    app.add_middleware(RequestContextMiddleware)
    return app
