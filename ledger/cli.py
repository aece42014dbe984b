"""``questline ledger ...``: ledger maintenance commands (mounted by ``server.cli``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from server.embedded import resolve_services
from server.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Ledger maintenance.")


@app.callback()
def ledger() -> None:
    """Ledger maintenance."""


@app.command()
def verify(
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the accounts.")] = True,
) -> None:
    """Check every ledger invariant; print a report and exit 1 if one is broken."""
    from ledger.verify import verify_database_url

    urls = resolve_services(get_settings())  # the configured URL, else the embedded server
    report = asyncio.run(verify_database_url(urls.database_url, progress=progress))
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)
