"""``newsletter partners ...``: thin click wrappers over the partner services."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


def _fail(exc: Exception, file: str | None = None):
    prefix = f"{file}: " if file else ""
    return click.ClickException(f"{prefix}{exc}")


@click.group()
def partners() -> None:
    """Partner stores: consented lists and suppressions, exchanged signed."""


@partners.command("add")
@click.argument("partner_id")
@click.argument("name")
@click.option("--secret", help="The pair's shared secret if the partner gave one (else one is generated).")
@click.option(
    "--url", help="The partner engine's base URL (https; http only on loopback), for push and pull."
)
@click.option(
    "--sync",
    type=click.Choice(["daily", "weekly", "off"]),
    default="off",
    show_default=True,
    help="Scheduled exchanges (push, then pull) run by the workers.",
)
@with_app
def add(app: Flask, partner_id: str, name: str, secret: str | None, url: str | None, sync: str) -> None:
    """Register PARTNER_ID (its own store id) shown to people as NAME; prints the secret once."""
    from newsletter.partners.registry import PartnerError, add_partner

    with app.extensions["newsletter"].sessions() as session:
        try:
            partner, secret = add_partner(session, partner_id, name, secret, url=url, sync=sync)
        except PartnerError as exc:
            raise _fail(exc) from None
        session.commit()
    click.echo(f"added partner {partner.id} ({partner.name})")
    click.echo(f"shared secret (shown once; give it to the partner over a safe channel): {secret}")


@partners.command("list")
@with_app
def list_(app: Flask) -> None:
    """Every partner: id, name, since (secrets are never shown again)."""
    from newsletter.partners.registry import list_partners

    with app.extensions["newsletter"].sessions() as session:
        for partner in list_partners(session):
            click.echo(f"{partner.id}  {partner.name}  since {partner.created_at:%Y-%m-%d}")


@partners.command("remove")
@click.argument("partner_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_app
def remove(app: Flask, partner_id: str, yes: bool) -> None:
    """Forget a partner (and its opt-out list); nobody can share with it any more."""
    from newsletter.partners.registry import remove_partner

    if not yes:
        click.confirm(f"Remove partner {partner_id}?", abort=True)
    with app.extensions["newsletter"].sessions() as session:
        removed = remove_partner(session, partner_id)
        session.commit()
    if not removed:
        raise click.ClickException(f"no partner with id {partner_id!r}")
    click.echo(f"removed partner {partner_id}")


def _write_atomically(out: str, chunks: Iterator[bytes]) -> int:
    """Write next to OUT and rename at the end: a failed export leaves no half-written file."""
    target = Path(out)
    fd, temp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".part")
    size = 0
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return size


def _export(app: Flask, partner_id: str, out: str, what: str) -> None:
    from newsletter.partners import exchange
    from newsletter.partners.registry import PartnerError, get_partner

    export = exchange.export_contacts if what == "contacts" else exchange.export_suppressions
    with app.extensions["newsletter"].sessions() as session:
        try:
            partner = get_partner(session, partner_id)
            size = _write_atomically(out, export(session, app.settings, partner))
        except PartnerError as exc:
            raise _fail(exc) from None
    click.echo(f"wrote {out} ({size} bytes, signed for {partner_id})")


@partners.command("export")
@click.argument("partner_id")
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True))
@with_app
def export(app: Flask, partner_id: str, out: str) -> None:
    """Write the signed file of everyone who agreed to be shared with PARTNER_ID."""
    _export(app, partner_id, out, "contacts")


@partners.command("export-suppressions")
@click.argument("partner_id")
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True))
@with_app
def export_suppressions(app: Flask, partner_id: str, out: str) -> None:
    """Write our suppression list for PARTNER_ID: SHA-256 and keyed HMAC per address, signed."""
    _export(app, partner_id, out, "suppressions")


def _import(app: Flask, partner_id: str, file: str, what: str, topics: tuple[str, ...] = ()):
    from sqlalchemy.exc import IntegrityError

    from newsletter.partners import exchange
    from newsletter.partners.checkpoint import ImportInterrupted
    from newsletter.partners.files import FileRefused
    from newsletter.partners.invitations import enqueue_invitations
    from newsletter.partners.registry import PartnerError, get_partner

    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session, open(file, "rb") as handle:
        try:
            partner = get_partner(session, partner_id)
            if what == "contacts":
                report = exchange.import_contacts(
                    session,
                    app.settings,
                    partner,
                    handle,
                    channel="cli",
                    dispatch=lambda ids: enqueue_invitations(runtime, ids),
                    topics=topics or exchange.DEFAULT_TOPICS,
                )
            else:
                report = exchange.import_suppressions(session, app.settings, partner, handle, channel="cli")
            session.commit()
        except (FileRefused, PartnerError) as exc:
            session.rollback()
            raise _fail(f"{exc}; nothing was imported", file) from None
        except ImportInterrupted as exc:
            raise _fail(exc, file) from None
        except IntegrityError:
            session.rollback()
            raise _fail(
                "a signup or another import added some of these addresses meanwhile; "
                "nothing was imported, run the import again",
                file,
            ) from None
    return report


@partners.command("import")
@click.argument("partner_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="TOPIC",
    help="A topic people confirm into; repeat for more (default: newsletter).",
)
@with_app
def import_(app: Flask, partner_id: str, file: str, topics: tuple[str, ...]) -> None:
    """Verify PARTNER_ID's signed FILE, then invite the people in it to confirm with us.

    A run of a file whose import was stopped goes on where it stopped.
    """
    report = _import(app, partner_id, file, "contacts", topics)
    click.echo(f"imported {file} (sha256 {report.file_sha256}): {report.records} records")
    if report.resumed_after:
        click.echo(f"  resumed: the first {report.resumed_after} were imported by an earlier run")
    click.echo(f"  invited: {report.invited}")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"  skipped, {reason.replace('_', ' ')}: {count}")
    if report.withdrawn:
        click.echo(f"  withdrawals applied (the partner's opt-outs now): {report.withdrawn}")


@partners.command("import-suppressions")
@click.argument("partner_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@with_app
def import_suppressions(app: Flask, partner_id: str, file: str) -> None:
    """Store PARTNER_ID's opt-outs: people it lists are never invited on its word."""
    report = _import(app, partner_id, file, "suppressions")
    click.echo(
        f"imported {file} (sha256 {report.file_sha256}): {report.records} hashes, "
        f"{report.added} new, {report.known} known already"
    )


@partners.command("update")
@click.argument("partner_id")
@click.option("--name", help="A new display name (one line, at most 100 characters).")
@click.option("--url", help="The partner engine's base URL; an empty string removes it.")
@click.option("--sync", type=click.Choice(["daily", "weekly", "off"]), help="Scheduled exchanges.")
@with_app
def update(app: Flask, partner_id: str, name: str | None, url: str | None, sync: str | None) -> None:
    """Change PARTNER_ID's name, URL or sync schedule."""
    from newsletter.partners.registry import PartnerError, update_partner

    with app.extensions["newsletter"].sessions() as session:
        try:
            partner = update_partner(session, partner_id, name=name, url=url, sync=sync)
        except PartnerError as exc:
            raise _fail(exc) from None
        session.commit()
        due = f", next at {partner.next_sync_at:%Y-%m-%d %H:%M} UTC" if partner.next_sync_at else ""
        click.echo(
            f"updated partner {partner.id} ({partner.name}): "
            f"url {partner.url or '-'}, sync {partner.sync}{due}"
        )


def _over_the_wire(app: Flask, partner_id: str, step: str, topics: tuple[str, ...] = ()) -> None:
    from newsletter.partners import exchange, wire
    from newsletter.partners.invitations import enqueue_invitations
    from newsletter.partners.registry import PartnerError, get_partner
    from newsletter.partners.sync import Busy, partner_lock

    runtime = app.extensions["newsletter"]
    try:
        with partner_lock(runtime, partner_id), runtime.sessions() as session:
            partner = get_partner(session, partner_id)
            if step == "push":
                outcomes = wire.push(session, app.settings, partner)
            else:
                outcomes = wire.pull(
                    session,
                    app.settings,
                    partner,
                    lambda ids: enqueue_invitations(runtime, ids),
                    topics or exchange.DEFAULT_TOPICS,
                )
    except (Busy, PartnerError, wire.ExchangeFailed) as exc:
        raise _fail(exc) from None
    for outcome in outcomes:
        what = "resumed the cut-off exchange" if outcome.resumed else step
        click.echo(
            f"{what} {outcome.exchange_id} with {partner_id}: "
            f"{outcome.records} records, invited {outcome.invited}"
        )
        for reason, count in sorted(outcome.skipped.items()):
            click.echo(f"  skipped, {reason.replace('_', ' ')}: {count}")


@partners.command("push")
@click.argument("partner_id")
@with_app
def push(app: Flask, partner_id: str) -> None:
    """Send PARTNER_ID's engine the signed export of what changed since the last push."""
    _over_the_wire(app, partner_id, "push")


@partners.command("pull")
@click.argument("partner_id")
@click.option(
    "--topic", "topics", multiple=True, metavar="TOPIC", help="A topic invited people confirm into."
)
@with_app
def pull(app: Flask, partner_id: str, topics: tuple[str, ...]) -> None:
    """Fetch PARTNER_ID's export of us (what changed since the last pull) and invite those people."""
    _over_the_wire(app, partner_id, "pull", topics)


@partners.command("history")
@click.argument("partner_id")
@click.option("--limit", default=50, show_default=True, help="How many of the newest exchanges.")
@with_app
def history_(app: Flask, partner_id: str, limit: int) -> None:
    """Every exchange with PARTNER_ID: when, direction, channel, records, invited, skipped, error."""
    from newsletter.partners import history

    with app.extensions["newsletter"].sessions() as session:
        rows = history.rows(session, partner_id, limit)
    if not rows:
        click.echo(f"no exchanges with {partner_id} yet")
    for row in rows:
        skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted((row.skipped or {}).items()))
        line = (
            f"{row.started_at:%Y-%m-%d %H:%M:%S}  #{row.id}  {row.direction:<6}  {row.channel:<4}  "
            f"{row.status:<7}  records {row.records}  invited {row.invited}"
        )
        if skipped:
            line += f"  skipped: {skipped}"
        if row.previous_id:
            line += f"  after #{row.previous_id}"
        if row.error:
            line += f"  error: {row.error}"
        click.echo(line)
