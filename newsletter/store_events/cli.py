"""``newsletter events ...``: store events from a JSON Lines file (the same rules as POST /api/events)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
def events() -> None:
    """The store's order and stock events (docs/store-mail.md)."""


@events.command("send")
@click.argument("jsonl_file", type=click.Path(exists=True, dir_okay=False))
@with_app
def events_send(app: Flask, jsonl_file: str) -> None:
    """Apply every event of a JSON Lines file, all or none; prints one result per event."""
    from functools import partial

    from newsletter.store_events.events import BadEvents, apply, parse_lines
    from newsletter.subscribers.jobs import send_transactional_many

    runtime = app.extensions["newsletter"]
    try:
        with open(jsonl_file, encoding="utf-8-sig") as handle:
            batch = parse_lines(handle.read().splitlines())
        with runtime.sessions() as session:
            results = apply(session, app.settings, batch, partial(send_transactional_many, runtime))
            session.commit()
    except UnicodeDecodeError as exc:
        raise click.ClickException(
            f"{jsonl_file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except BadEvents as exc:
        for problem in exc.problems:
            click.echo(f"{jsonl_file}: {problem}", err=True)
        click.echo(f"events: nothing applied ({len(exc.problems)} problems)", err=True)
        sys.exit(1)
    for result in results:
        click.echo(json.dumps(result))
    click.echo(f"events: {len(results)} applied", err=True)


@events.command("check")
@with_app
def events_check(app: Flask) -> None:
    """Check every store email's files; print file:line:col: reason per problem (marketing included)."""
    from newsletter.store_events.check import problems

    found = problems(app.settings)
    for problem in found:
        click.echo(problem, err=True)
    if found:
        sys.exit(1)
    click.echo("store mail: every kind renders, no marketing content")


@events.command("preview")
@click.argument("kind")
@click.option(
    "--out",
    default="store-mail-preview",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for KIND.html, .txt, .eml and .subject.txt.",
)
@click.option(
    "--event",
    "event_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A real event (JSON) instead of the sample.",
)
@with_app
def events_preview(app: Flask, kind: str, out: str, event_file: str | None) -> None:
    """Write KIND's store mail (HTML, text, subject, .eml) as a customer would get it.

    KIND: order_placed, order_shipped, order_delayed, order_cancelled, item_out_of_stock, back_in_stock.
    """
    from pathlib import Path

    from jinja2 import TemplateError

    from newsletter.models.outbox import STORE_KINDS
    from newsletter.store_events.preview import BadPreview, event_for, write_preview

    kinds = sorted(k.value for k in STORE_KINDS)  # checked here: --help must not import the models
    if kind not in kinds:
        raise click.ClickException(f"{kind!r} is not a kind that sends mail (one of: {', '.join(kinds)})")
    given = None
    if event_file:
        try:
            with open(event_file, encoding="utf-8-sig") as handle:
                given = json.load(handle)
        except (UnicodeDecodeError, ValueError) as exc:
            raise click.ClickException(f"{event_file}: not a JSON event ({exc})") from None
    try:
        subject, files = write_preview(app.settings, kind, event_for(kind, given), Path(out))
    except BadPreview as exc:
        for problem in exc.problems:
            click.echo(f"{event_file}: {problem.lstrip('.')}", err=True)
        sys.exit(1)
    except (TemplateError, ValueError) as exc:
        raise click.ClickException(f"{kind}: {exc}; run 'newsletter events check'") from None
    except OSError as exc:
        raise click.ClickException(f"{out}: {exc.strerror or exc}") from None
    for path in files:
        click.echo(str(path))
    click.echo(f"subject: {subject}")


@events.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of one store event."""
    from newsletter.store_events.schema import SCHEMA

    click.echo(json.dumps(SCHEMA, indent=2))
