"""``newsletter subscribers ...`` and ``newsletter suppressions ...``: thin click wrappers over services."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import LazyChoice, exit_if_refused, print_errors, with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
def subscribers() -> None:
    """Look at subscribers."""


def _address_or_fail(email: str) -> str:
    from newsletter.mail.addresses import InvalidAddress, normalize_address

    try:
        return normalize_address(email)
    except InvalidAddress as exc:
        raise click.ClickException(f"{email!r}: {exc}") from None


def _subscriber_or_fail(session, email: str):
    from newsletter.subscribers.signup import find_subscriber

    address = _address_or_fail(email)
    subscriber = find_subscriber(session, address)
    if subscriber is None:
        raise click.ClickException(f"no subscriber with address {address}")
    return subscriber


@subscribers.command("show")
@click.argument("email")
@with_app
def subscribers_show(app: Flask, email: str) -> None:
    """Print a subscriber's status, topics and consent ledger as JSON."""
    from newsletter.subscribers.data_rights import export_data

    with app.extensions["newsletter"].sessions() as session:
        data = export_data(session, _subscriber_or_fail(session, email))
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@subscribers.command("export")
@click.argument("email")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to a file, not stdout.")
@with_app
def subscribers_export(app: Flask, email: str, out: str | None) -> None:
    """Everything held about a person, as JSON (what "download my data" gives them); also for an
    address that is no subscriber (a customer's store events)."""
    from newsletter.subscribers.data_rights import export_address

    address = _address_or_fail(email)
    with app.extensions["newsletter"].sessions() as session:
        data = export_address(session, address)
    if data is None:
        raise click.ClickException(f"nothing is held about {address}")
    text = json.dumps(data, indent=2, ensure_ascii=False)
    if out:
        Path(out).write_text(text + "\n", "utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@subscribers.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_app
def subscribers_erase(app: Flask, email: str, yes: bool) -> None:
    """Erase a person: personal data gone, ledger pseudonymised, address hash kept as suppression.

    An address that is no subscriber loses its store events, store mail and order invitation."""
    from newsletter.subscribers.consent import RequestInfo
    from newsletter.subscribers.data_rights import erase_address

    address = _address_or_fail(email)
    if not yes:
        click.confirm(f"Erase everything held about {address}?", abort=True)
    with app.extensions["newsletter"].sessions() as session:
        subscriber = erase_address(session, address, RequestInfo(None, None, "cli:erase"))
        session.commit()
        who = f"subscriber {subscriber.id}" if subscriber else address
    click.echo(f"erased {who}; the address stays suppressed (hash only)")


def _open_csv(csv_file: str):
    """The file's SHA-256 (evidence of what was imported) and a fresh UTF-8 text handle."""
    import hashlib

    digest = hashlib.sha256()
    with open(csv_file, "rb") as raw:
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest(), open(csv_file, encoding="utf-8-sig", newline="")


@subscribers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--source",
    required=True,
    metavar="NAME",
    help="The tool the list comes from, e.g. mailchimp (in the ledger).",
)
@click.option(
    "--topic",
    "topic",
    multiple=True,
    metavar="TOPIC",
    help="A topic for rows without a topics cell; repeat for more (as partners import --topic).",
)
@click.option("--topics", default="", metavar="T1,T2", help="The same, comma-separated.")
@with_app
def subscribers_import(app: Flask, csv_file: str, source: str, topic: tuple[str, ...], topics: str) -> None:
    """Import an opted-in list (docs/customers.md): evidence rows go active, others get a confirmation."""
    from newsletter.subscribers.imports import check_source_name, import_subscribers
    from newsletter.subscribers.jobs import send_transactional_many

    try:
        source = check_source_name(source)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    runtime = app.extensions["newsletter"]
    file_sha256, handle = _open_csv(csv_file)
    try:
        with handle, runtime.sessions() as session:
            report = import_subscribers(
                session,
                runtime.redis,
                runtime.settings,
                handle,
                source=source,
                file_sha256=file_sha256,
                dispatch_many=partial(send_transactional_many, runtime),
                default_topics=list(
                    dict.fromkeys(t.strip() for t in (*topic, *topics.split(",")) if t.strip())
                ),
            )
            session.commit()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    print_errors(csv_file, report.errors, report.bad)
    click.echo(f"imported with consent evidence: {report.imported}")
    click.echo(f"pending, confirmation sent: {report.confirmation_sent}")
    click.echo(f"pending, confirmation held back (daily cap for the address): {report.confirmation_capped}")
    for reason, count in sorted(report.skipped.items()):
        click.echo(f"skipped, {reason}: {count}")
    click.echo(f"bad rows: {report.bad}")
    click.echo(f"file sha256: {file_sha256}")
    exit_if_refused(csv_file, report.bad, "the other rows were imported")


@click.group()
def suppressions() -> None:
    """The list of addresses never to mail."""


@suppressions.command("list")
@with_app
def suppressions_list(app: Flask) -> None:
    """Print every entry: hash, reason, since, source."""
    from sqlalchemy import select

    from newsletter.models import Suppression

    with app.extensions["newsletter"].sessions() as session:
        for entry in session.scalars(select(Suppression).order_by(Suppression.id)):
            click.echo(
                f"{entry.email_hash}  {entry.reason.value:<12}  {entry.created_at:%Y-%m-%d %H:%M}  "
                f"{entry.source}  {entry.note}".rstrip()
            )


def _reasons() -> list[str]:
    from newsletter.core.vocabulary import SuppressionReason

    return [reason.value for reason in SuppressionReason]


@suppressions.command("add")
@click.argument("email_or_hash")
@click.option("--reason", type=LazyChoice(_reasons), default="manual", show_default=True)
@click.option("--note", default="")
@with_app
def suppressions_add(app: Flask, email_or_hash: str, reason: str, note: str) -> None:
    """Suppress an address (or a SHA-256 hash of one)."""
    from newsletter.mail.addresses import InvalidAddress
    from newsletter.models import SuppressionReason
    from newsletter.subscribers import suppression

    try:
        email_hash = suppression.hash_for(email_or_hash)
    except InvalidAddress as exc:
        raise click.ClickException(f"{email_or_hash!r}: {exc}") from None
    with app.extensions["newsletter"].sessions() as session:
        entry = suppression.suppress(session, email_hash, SuppressionReason(reason), "cli", note)
        session.commit()
        click.echo(f"suppressed {entry.email_hash} ({entry.reason.value})")


@suppressions.command("remove")
@click.argument("email_or_hash")
@with_app
def suppressions_remove(app: Flask, email_or_hash: str) -> None:
    """Lift a suppression (an operator's decision: complaints too)."""
    from newsletter.mail.addresses import InvalidAddress
    from newsletter.subscribers import suppression

    try:
        email_hash = suppression.hash_for(email_or_hash)
    except InvalidAddress as exc:
        raise click.ClickException(f"{email_or_hash!r}: {exc}") from None
    with app.extensions["newsletter"].sessions() as session:
        removed = suppression.remove(session, email_hash)
        session.commit()
    if not removed:
        raise click.ClickException(f"{email_hash} is not suppressed")
    click.echo(f"lifted {email_hash}")


@suppressions.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@with_app
def suppressions_import(app: Flask, csv_file: str) -> None:
    """Import a CSV (header: email or email_hash, optional reason, note); all or nothing."""
    from newsletter.subscribers import suppression

    try:
        with (
            open(csv_file, encoding="utf-8-sig", newline="") as handle,
            app.extensions["newsletter"].sessions() as session,
        ):
            report = suppression.import_csv(session, handle, f"import:{Path(csv_file).name}")
            if report.errors:
                session.rollback()
                for error in report.errors[:20]:
                    click.echo(f"{csv_file}: {error}", err=True)
                raise click.ClickException(f"{len(report.errors)} bad rows; nothing imported")
            session.commit()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    click.echo(f"imported: {report.added} added, {report.unchanged} already suppressed")


@suppressions.command("export")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to a file, not stdout.")
@with_app
def suppressions_export(app: Flask, out: str | None) -> None:
    """Export the list as CSV (hashes only; safe to open in a spreadsheet)."""
    from newsletter.subscribers import suppression

    with app.extensions["newsletter"].sessions() as session:
        chunks = suppression.export_csv(session)
        if out:
            with open(out, "w", encoding="utf-8", newline="") as handle:
                handle.writelines(chunks)
            click.echo(f"wrote {out}")
        else:
            for chunk in chunks:
                click.echo(chunk, nl=False)
