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
            results = apply(session, batch, partial(send_transactional_many, runtime))
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
    """Render every store email with a sample event; refuse marketing in them (early access, sales)."""
    from newsletter.store_events.check import problems

    found = problems(app.settings)
    for problem in found:
        click.echo(problem, err=True)
    if found:
        sys.exit(1)
    click.echo("store mail: every kind renders, no marketing content")


@events.command("schema")
def events_schema() -> None:
    """Print the JSON Schema of one store event."""
    from newsletter.store_events.schema import SCHEMA

    click.echo(json.dumps(SCHEMA, indent=2))
