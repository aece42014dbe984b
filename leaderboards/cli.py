"""``questline leaderboard ...`` (mounted by ``server.cli``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from server.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Leaderboards.")


@app.callback()
def leaderboard() -> None:
    """Leaderboards: rebuild from PostgreSQL, close finished periods."""


@app.command("rebuild")
def rebuild_command(
    key: Annotated[str | None, typer.Option(help="Only this board (default: every board).")] = (
        None
    ),
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Rebuild boards in Redis from the ledger and events in PostgreSQL (safe while the API
    runs: updates arriving meanwhile are kept)."""
    from leaderboards.rebuild import rebuild

    async def run() -> str:
        from leaderboards import updates
        from server.runtime import Runtime

        runtime = await Runtime.start(get_settings())
        updates.bind(runtime)
        try:
            report = await rebuild(runtime, board_key=key, progress=progress)
        finally:
            await runtime.close()
        return (
            f"Rebuilt {report.boards} board(s), {report.keys} key(s), {report.members:,} "
            f"member score(s) in {report.seconds:.1f} s."
        )

    try:
        typer.echo(asyncio.run(run()))
    except LookupError as error:
        typer.echo(f"Error: {error.args[0]}", err=True)
        raise typer.Exit(2) from None


@app.command("close")
def close_command() -> None:
    """Close finished periods now: archive their standings and grant prizes (what the
    scheduled ``leaderboards.close_period`` job does)."""
    from leaderboards.closing import close_finished_periods
    from leaderboards.tasks import closed_summary

    async def run() -> str:
        from leaderboards import updates
        from server.runtime import Runtime

        runtime = await Runtime.start(get_settings())
        updates.bind(runtime)
        try:
            closed = await close_finished_periods(runtime)
        finally:
            await runtime.close()
        return f"Closed: {closed_summary(closed)}."

    typer.echo(asyncio.run(run()))
