"""``newsletter topics add|rename|retire|list``: thin click wrappers over subscribers/topics.py."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
def topics() -> None:
    """The topics people choose on the forms (docs/topics.md)."""


def _change(app: Flask, change):
    """Run ``change(session)`` and commit; a refusal is one line and writes nothing."""
    from newsletter.subscribers.topics import TopicError

    with app.extensions["newsletter"].sessions() as session:
        try:
            result = change(session)
        except TopicError as exc:
            session.rollback()
            raise click.ClickException(str(exc)) from None
        session.commit()
        return result


@topics.command("add")
@click.argument("slug")
@click.argument("label")
@click.option("--description", default="", help="One line under the label on the forms.")
@with_app
def topics_add(app: Flask, slug: str, label: str, description: str) -> None:
    """Offer a new topic SLUG (lowercase letters, digits, hyphens; fixed for good) shown as LABEL."""
    from newsletter.subscribers.topics import add_topic

    _change(app, lambda session: add_topic(session, slug, label, description))
    click.echo(f"added {slug} ({label!r}), last on the forms")


@topics.command("rename")
@click.argument("slug")
@click.argument("label")
@click.option("--description", default=None, help="Replace the line under the label too.")
@click.option(
    "--language", default=None, help="The label in this language (e.g. de); without: the default label."
)
@with_app
def topics_rename(app: Flask, slug: str, label: str, description: str | None, language: str | None) -> None:
    """Show topic SLUG as LABEL from now on; the slug stays (campaign files and links name it)."""
    from newsletter.subscribers.topics import rename_topic

    old = _change(app, lambda session: rename_topic(session, slug, label, description, language))
    where = f" in {language}" if language else ""
    click.echo(f"renamed {slug}{where}: {old!r} -> {label.strip()!r} (the slug stays {slug})")


@topics.command("retire")
@click.argument("slug")
@with_app
def topics_retire(app: Flask, slug: str) -> None:
    """Take topic SLUG off the forms and send its people nothing more; their history stays."""
    from newsletter.subscribers.topics import retire_topic

    topic, changed = _change(app, lambda session: retire_topic(session, slug))
    if changed:
        click.echo(f"retired {slug}: no form offers it and no campaign mails it from now on")
    else:
        click.echo(f"{slug} was already retired on {topic.retired_at:%Y-%m-%d %H:%M} UTC; nothing changed")


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_app
def topics_list(app: Flask, as_json: bool) -> None:
    """Every topic in form order: slug, label, subscribed people, retired or not."""
    from newsletter.subscribers.topics import topic_rows

    with app.extensions["newsletter"].sessions() as session:
        rows = topic_rows(session)
    if as_json:
        data = [
            {
                "slug": r.slug,
                "label": r.label,
                "description": r.description,
                "subscribers": r.subscribers,
                "retired_at": r.retired_at.isoformat() + "Z" if r.retired_at else None,
                "languages": list(r.languages),
            }
            for r in rows
        ]
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    width = max([len(r.slug) for r in rows] + [4])
    label_width = max([len(r.label) for r in rows] + [5])
    click.echo(f"{'slug':<{width}}  {'label':<{label_width}}  {'subscribers':>11}  {'state':<18}  also in")
    for r in rows:
        state = f"retired {r.retired_at:%Y-%m-%d}" if r.retired_at else "offered"
        also = " ".join(r.languages) or "-"
        click.echo(f"{r.slug:<{width}}  {r.label:<{label_width}}  {r.subscribers:>11}  {state:<18}  {also}")
