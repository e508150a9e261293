"""``newsletter bounces``: the bounce MX (serve) and mailbox imports (import), one parser behind both."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: Flask stays out of --help
    from flask import Flask

log = logging.getLogger(__name__)


@click.group()
def bounces() -> None:
    """Bounces and complaints (DSN, ARF) from the bounce mailbox."""


def _listen(_ctx, _param, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("expected HOST:PORT, e.g. 0.0.0.0:25")
    return host.strip("[]"), int(port)


@bounces.command("serve")
@click.option("--listen", default="127.0.0.1:2525", show_default=True, callback=_listen, help="HOST:PORT")
@with_app
def serve_command(app: Flask, listen: tuple[str, int]) -> None:
    """Receive bounces and ARF reports over SMTP (the bounce domain's MX) until stopped."""
    import signal
    import threading

    from newsletter.feedback.server import make_server

    runtime = app.extensions["newsletter"]
    if not runtime.settings.bounce_address:
        raise click.ClickException("configuration: NEWSLETTER_BOUNCE_ADDRESS is not set")
    server = make_server(runtime, *listen)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {exc}") from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    log.info("bounces: listening on %s:%d for %s", *listen, runtime.settings.bounce_address)
    click.echo(f"listening on {listen[0]}:{listen[1]}", err=True)
    try:
        stop.wait()
    finally:
        server.stop()


@bounces.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@with_app
def import_command(app: Flask, paths: tuple[Path, ...]) -> None:
    """Record bounces and complaints from an mbox, a Maildir folder or .eml files."""
    from newsletter.feedback.mailboxes import import_reports

    runtime = app.extensions["newsletter"]
    summary = import_reports(runtime.sessions, runtime.settings, list(paths))
    for label, outcome in summary.notes:
        click.echo(f"{label}: {outcome.status}: {outcome.detail}", err=True)
    click.echo(summary.line())
