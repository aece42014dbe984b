"""The ``questline`` command.

Every command first says, on stderr, whether it runs on the embedded development servers or on
the configured ones (stderr keeps stdout clean for what a command prints: a token, an API
key). Commands that need PostgreSQL or Redis start the embedded ones for whatever URL is not
configured (data under ``QUESTLINE_DATA_DIR``), export the resolved URLs into their own
environment (so child processes and uvicorn workers reuse them instead of starting their own)
and stop them again on exit, also after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

import typer

from server.dev import StopRequested, Supervisor, signals_deferred, stop_on_signals
from server.embedded import ServiceUrls, child_env, resolve_services, stop_embedded
from server.settings import Settings, get_settings

EXIT_INTERRUPTED = 130

# pgserver (embedded PostgreSQL) falls back to /tmp when XDG_RUNTIME_DIR is unset, which is
# the norm in containers and CI; the warning would only clutter the first lines of output.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

app = typer.Typer(
    help="Questline: a gamification and loyalty server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would print settings, secrets included
)
apikey_app = typer.Typer(help="Manage API keys for back-ends.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")


def describe(settings: Settings) -> str:
    """The first line of every command: embedded or configured servers."""
    return ServiceUrls(
        database_url="",
        redis_url="",
        broker_url="",
        embedded_database=settings.database_url is None,
        embedded_redis=settings.redis_url is None,
    ).describe()


def announce(settings: Settings) -> None:
    typer.echo(describe(settings), err=True)


_active_services: ServiceUrls | None = None


@contextlib.contextmanager
def cli_services() -> Iterator[ServiceUrls]:
    """Announce, resolve (starting embedded servers as needed), export, and always clean up.

    Re-entrant: a command inside a group that already resolved the services gets the same
    ones. Ctrl-C / SIGTERM while inside ends the command with exit code 130 after clean-up.
    """
    global _active_services
    if _active_services is not None:
        yield _active_services
        return
    settings = get_settings()
    announce(settings)
    # Only a command that starts embedded servers stops them (never a caller's servers).
    starts_embedded = settings.database_url is None or settings.redis_url is None
    try:
        with stop_on_signals():
            try:
                urls = resolve_services(settings)
                os.environ.update(urls.as_env())
                get_settings.cache_clear()
                _active_services = urls
                yield urls
            finally:
                _active_services = None
                if starts_embedded:
                    with signals_deferred():
                        stop_embedded()
    except StopRequested:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _configure_logging() -> None:
    from server.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)


@app.callback()
def main(ctx: typer.Context) -> None:
    """Questline: a gamification and loyalty server."""
    # Commands mounted from other packages (``ledger ...``) get the services resolved here.
    wants_help = any(arg in ("--help", "-h") for arg in sys.argv[1:])
    mounted = {"ledger": LEDGER_CLI_AVAILABLE, "leaderboard": True}
    if mounted.get(ctx.invoked_subcommand or "") and not wants_help:
        stack = contextlib.ExitStack()
        stack.enter_context(cli_services())
        ctx.call_on_close(stack.close)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface of the API.")] = "127.0.0.1",
    seed: Annotated[bool, typer.Option(help="Load the demo program into an empty database.")] = (
        True
    ),
) -> None:
    """Everything for development: migrate, demo data, API + worker + scheduler (Ctrl-C stops)."""
    from server.dev import run_dev

    def seed_if_empty() -> None:
        if seed:
            asyncio.run(_seed(only_if_empty=True))

    with cli_services() as urls:
        code = run_dev(urls, host=host, port=port, seed=seed_if_empty)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Number of API processes.")] = 1,
) -> None:
    """Serve the API (uvicorn with uvloop and httptools)."""
    import uvicorn

    with cli_services():
        uvicorn.run(
            "server.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            proxy_headers=True,
            access_log=get_settings().access_log,
            timeout_graceful_shutdown=10,
        )


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = (
        os.cpu_count() or 1
    ),
    threads: Annotated[int, typer.Option(min=1, help="Threads per worker process.")] = 8,
    queues: Annotated[
        list[str] | None, typer.Option("--queue", help="Only these queues (repeatable).")
    ] = None,
    shutdown_timeout: Annotated[
        int, typer.Option(min=1, help="Seconds running jobs get to finish on shutdown.")
    ] = 600,
) -> None:
    """Run a Dramatiq worker for every domain's actors."""
    from server.dev import worker_command

    with cli_services() as urls:
        supervisor = Supervisor(child_env(urls), stop_timeout=shutdown_timeout + 10)
        child = supervisor.start(
            "worker",
            worker_command(processes, threads, shutdown_timeout * 1000, queues or ()),
        )
        try:
            supervisor.wait()
            code = child.process.returncode
        except StopRequested:
            code = 0
        finally:
            supervisor.stop_all()
    raise typer.Exit(code)


@app.command()
def scheduler() -> None:
    """Send periodic jobs. Start as many as you like: one leads (PostgreSQL advisory lock)."""
    from server.scheduler import run_scheduler

    with cli_services():
        _configure_logging()
        asyncio.run(run_scheduler(get_settings()))


@app.command()
def migrate() -> None:
    """Upgrade the database to the latest schema (alembic upgrade head)."""
    from server.migrate import upgrade_head

    with cli_services() as urls:
        upgrade_head(urls.database_url)
        typer.echo("The database schema is up to date.")


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the demo program (idempotent: running it twice creates nothing twice)."""
    with cli_services():
        asyncio.run(_seed(only_if_empty=False))


async def _seed(*, only_if_empty: bool) -> None:
    from server.demo import database_is_empty
    from server.demo import seed_demo as seed_program
    from server.runtime import Runtime

    runtime = await Runtime.start(get_settings())
    try:
        if only_if_empty and not await database_is_empty(runtime):
            return
        report = await seed_program(runtime)
    finally:
        await runtime.close()
    created = ", ".join(f"{name}: {count}" for name, count in report.items())
    typer.echo(f"Demo program loaded (created {created}).")


@app.command()
def token(
    member: Annotated[str | None, typer.Option(help="A member token for this externalId.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token.")] = False,
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds.")] = 24 * 3600,
) -> None:
    """Print a signed JWT to try the API (GraphiQL: {"Authorization": "Bearer <token>"})."""
    from server.auth import issue_token

    settings = get_settings()
    announce(settings)
    if (member is None) == (not admin):
        typer.echo("Give exactly one of --member EXTERNAL_ID and --admin.", err=True)
        raise typer.Exit(2)
    if admin:
        jwt = issue_token(settings, subject="cli-admin", role="admin", ttl_seconds=ttl)
    else:
        jwt = issue_token(settings, subject=member, role="member", ttl_seconds=ttl)
    typer.echo(jwt)


class ApiKeyScope(StrEnum):
    admin = "admin"
    events = "events"


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. 'checkout-backend'.")],
    scope: Annotated[
        ApiKeyScope,
        typer.Option(help="admin: everything; events: recordEvent, registerMember, read members."),
    ],
) -> None:
    """Create an API key and print it once (only a hash is stored)."""
    with cli_services():
        key = asyncio.run(_create_api_key(name, scope.value))
    typer.echo("Store this key now; it cannot be shown again:", err=True)
    typer.echo(key)


async def _create_api_key(name: str, scope: str) -> str:
    from server.auth import create_api_key
    from server.runtime import Runtime

    runtime = await Runtime.start(get_settings())
    try:
        async with runtime.transaction() as session:
            return await create_api_key(session, name=name, scope=scope)
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        await runtime.close()


def _ledger_cli_available() -> bool:
    try:
        return importlib.util.find_spec("ledger.cli") is not None
    except ModuleNotFoundError:
        return False


LEDGER_CLI_AVAILABLE = _ledger_cli_available()


def _mount_ledger() -> None:
    """``questline ledger ...`` comes from the ledger package once it provides ``ledger.cli``."""
    if LEDGER_CLI_AVAILABLE:
        from ledger.cli import app as ledger_app

        app.add_typer(ledger_app, name="ledger", help="Ledger maintenance.")
        return
    placeholder = typer.Typer(help="Ledger maintenance (not available yet).")

    @placeholder.command("verify")
    def verify() -> None:
        """Check every ledger invariant."""
        announce(get_settings())
        typer.echo("The ledger is not part of this build yet.", err=True)
        raise typer.Exit(2)

    app.add_typer(placeholder, name="ledger")


_mount_ledger()


def _mount_leaderboards() -> None:
    """``questline leaderboard ...`` (rebuild, close) from the leaderboards package."""
    from leaderboards.cli import app as leaderboard_app

    app.add_typer(leaderboard_app, name="leaderboard", help="Leaderboards: rebuild, close.")


_mount_leaderboards()


if __name__ == "__main__":
    app()
