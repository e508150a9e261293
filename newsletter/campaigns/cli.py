"""``newsletter campaign ...``: validate, preview, test-send and list campaign folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import database_unreachable, with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask

DEFAULT_DIR = Path("campaigns")


def _site(runtime):
    """Site context from config and the topics table (one-line error if the DB is not ready)."""
    from sqlalchemy.exc import SQLAlchemyError

    from newsletter.campaigns.site import retired_from_db, site_context, topics_from_db, translations_from_db

    try:
        with runtime.sessions() as session:
            topics = topics_from_db(session)
            retired = retired_from_db(session)
            translations = translations_from_db(session)
    except SQLAlchemyError as exc:
        if database_unreachable(runtime.engine) is not None:
            raise  # with_app says which setting and address
        reason = str(exc).splitlines()[0]
        raise click.ClickException(f"cannot read topics ({reason}); run 'newsletter db upgrade'") from None
    return site_context(runtime.settings, topics, retired, translations)


def _validate(folder: Path, site):
    """Validate one folder; an unexpected failure is that folder's error, so the next one is still checked."""
    from newsletter.campaigns.validation import validate_folder
    from newsletter.core import clock

    return validate_folder(folder, site, clock.now())


def _valid_report(path: str, site):
    report = _validate(Path(path), site)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    if not report.ok:
        raise click.ClickException(f"{path}: {len(report.errors)} error(s); fix them first")
    return report


#: preview and test-send: which languages' emails (campaign variants, docs/campaigns.md#languages)
_language_option = click.option(
    "--language",
    "languages",
    multiple=True,
    metavar="LANG",
    help="Only this language's email (repeatable) [default: the default email and every variant].",
)


@click.group()
def campaign() -> None:
    """Campaign folders under campaigns/: validate, preview, test-send, list, and scheduling and sending."""


@campaign.command("validate")
@click.argument("paths", nargs=-1, type=click.Path(file_okay=False))
@click.option("--dir", "root", help="Where campaign folders live [default: CAMPAIGNS_DIR, campaigns].")
@with_app
def validate(app: Flask, paths: tuple[str, ...], root: str | None) -> None:
    """Check campaigns (all under --dir by default): every problem as file:line:col: message on stderr,
    "FOLDER: ok" on stdout; exit 1 if any folder has an error."""
    from newsletter.campaigns.validation import find_campaigns
    from newsletter.core.config import insecure_base_url

    runtime = app.extensions["newsletter"]
    root = root or runtime.settings.campaigns_dir
    folders = [Path(p) for p in paths] or find_campaigns(Path(root))
    if not folders:
        raise click.ClickException(f"no campaign folders under {root}/")
    site = _site(runtime)
    insecure = insecure_base_url(runtime.settings)
    if insecure:
        click.echo(f"warning: {insecure}; 'campaign schedule' refuses it unless on loopback", err=True)
    failed = 0
    for folder in folders:
        report = _validate(folder, site)
        for problem in report.problems:  # problems on stderr, successes on stdout: pipes keep them apart
            click.echo(str(problem), err=True)
        failed += not report.ok
        summary = "ok" if report.ok else f"{len(report.errors)} error(s)"
        click.echo(f"{folder}: {summary}, {len(report.warnings)} warning(s)", err=not report.ok)
    if failed:
        raise SystemExit(1)


@campaign.command("new")
@click.argument("slug")
@click.option(
    "--dir", "root", default=str(DEFAULT_DIR), show_default=True, help="Where campaign folders live."
)
@click.option("--topic", default="newsletter", show_default=True, metavar="TOPIC", help="Who receives it.")
def new(slug: str, root: str, topic: str) -> None:
    """Write a commented starting folder DIR/SLUG (campaign.toml, email.mjml, email.txt) that validates."""
    from newsletter.campaigns.starter import StarterError, write_starter
    from newsletter.core import clock

    try:
        folder = write_starter(Path(root), slug, topic, clock.now())
    except (StarterError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {folder}; check it with: newsletter campaign validate {folder}")


@campaign.command("preview")
@click.argument("path", type=click.Path(file_okay=False))
@click.option(
    "--subscriber", "email", help="Render for this subscriber (real name and links, their language's email)."
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for the files.")
@click.option("--no-screenshots", is_flag=True, help="Skip the Chromium screenshots.")
@_language_option
@with_app
def preview(
    app: Flask, path: str, email: str | None, out: str, no_screenshots: bool, languages: tuple[str, ...]
) -> None:
    """Write HTML, text, .eml and 600/375 px PNG screenshots of every distinct email, in every language."""
    from newsletter.campaigns.preview import ChromiumMissing, write_preview
    from newsletter.campaigns.validation import sample_values

    runtime = app.extensions["newsletter"]
    site = _site(runtime)
    report = _valid_report(path, site)
    chosen = _languages(report, path, languages)
    values, to = sample_values(site), "alex@example.com"
    if email:
        values, to, language = _subscriber_values(runtime, report, email)
        if not languages:  # what this person would get
            chosen = [report.language_for(language, runtime.settings.default_language)]
    try:
        files = write_preview(
            report, site, to, values, Path(out), screenshots=not no_screenshots, languages=chosen
        )
    except ChromiumMissing as exc:
        files = write_preview(report, site, to, values, Path(out), screenshots=False, languages=chosen)
        for item in files:
            click.echo(str(item.path))
        raise click.ClickException(str(exc)) from None
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    for item in files:
        click.echo(str(item.path))


def _languages(report, path: str, asked: tuple[str, ...]) -> list[str]:
    """The languages asked for (all of the folder's when none), each one the folder has an email in."""
    for language in asked:
        if language not in report.languages:
            raise click.ClickException(
                f"{path} has no {language} email (its languages: {', '.join(report.languages)})"
            )
    return list(dict.fromkeys(asked)) or report.languages


def _subscriber_values(runtime, report, email: str) -> tuple[dict[str, str], str, str | None]:
    """Real personal values of one subscriber (their own links), as a worker would pass them, and
    their stored language."""
    from sqlalchemy import select

    from newsletter.mail.addresses import InvalidAddress, normalize_address
    from newsletter.models import Campaign
    from newsletter.subscribers import links
    from newsletter.subscribers.signup import find_subscriber

    try:
        address = normalize_address(email)
    except InvalidAddress as exc:
        raise click.ClickException(f"{email!r}: {exc}") from None
    with runtime.sessions() as session:
        subscriber = find_subscriber(session, address)
        if subscriber is None:
            raise click.ClickException(f"no subscriber with address {address}")
        source = report.campaign
        campaign_id = session.scalar(select(Campaign.id).where(Campaign.slug == source.slug)) or 0
        settings = runtime.settings
        values = {
            "first_name": subscriber.first_name or "",
            "email": subscriber.email,
            "unsubscribe_url": links.unsubscribe_url(settings, subscriber, topic=source.topic),
            "preferences_url": links.preferences_url(settings, subscriber),
        }
        if source.sale:
            values["early_access_url"] = links.early_access_url(settings, subscriber, campaign_id)
        return values, subscriber.email, subscriber.language


@campaign.command("test-send")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--to", "to", required=True, help="Address that receives the test.")
@click.option("--wave", help="Which wave's email (default: each distinct email once).")
@_language_option
@with_app
def test_send(app: Flask, path: str, to: str, wave: str | None, languages: tuple[str, ...]) -> None:
    """Send the campaign once to ADDRESS through the configured transport, subject prefixed [TEST]."""
    from newsletter.campaigns.preview import TEST_PREFIX, campaign_message, envelope_from
    from newsletter.campaigns.validation import sample_values
    from newsletter.mail.addresses import InvalidAddress, normalize_address
    from newsletter.mail.message import HeaderInjection
    from newsletter.mail.transports import TransportError, make_transport

    runtime = app.extensions["newsletter"]
    site = _site(runtime)
    report = _valid_report(path, site)
    try:
        address = normalize_address(to)
    except InvalidAddress as exc:
        raise click.ClickException(f"{to!r}: {exc}") from None
    if wave is not None and wave not in {w.name for w in report.campaign.waves}:
        raise click.ClickException(f"no wave {wave!r} in {path}")
    chosen = _languages(report, path, languages)
    values = {**sample_values(site), "email": address}
    transport = make_transport(runtime.settings)
    try:
        for language in chosen:
            emails = report.emails_in(language)
            if wave is not None:
                emails = {wave: emails.get(wave) or emails[None]}
            for name, email in emails.items():
                data = campaign_message(
                    report, site, name, email, address, values, subject_prefix=TEST_PREFIX
                )
                transport.send_raw(envelope_from(report, site), [address], data)
                what = ", ".join(([name] if name else []) + ([language] if len(chosen) > 1 else []))
                click.echo(
                    f"sent {TEST_PREFIX}{report.campaign.slug}{f' ({what})' if what else ''} to {address}"
                )
    except (TransportError, HeaderInjection) as exc:
        raise click.ClickException(f"not sent: {exc}") from None
    finally:
        transport.close()


@campaign.command("list")
@click.option("--dir", "root", help="Where campaign folders live [default: CAMPAIGNS_DIR, campaigns].")
@with_app
def list_campaigns(app: Flask, root: str | None) -> None:
    """Every campaign folder with its status: the scheduled row's, else draft, or invalid."""
    from sqlalchemy import select

    from newsletter.campaigns.validation import find_campaigns
    from newsletter.models import Campaign

    runtime = app.extensions["newsletter"]
    root = root or runtime.settings.campaigns_dir
    site = _site(runtime)
    with runtime.sessions() as session:
        scheduled = {slug: status for slug, status in session.execute(select(Campaign.slug, Campaign.status))}
    for folder in find_campaigns(Path(root)):
        report = _validate(folder, site)
        status = scheduled.get(folder.name)
        label = status.value if status is not None else "draft" if report.ok else "invalid"
        if status is not None and not report.ok:
            label += " (files now invalid)"
        name = report.campaign.name if report.campaign else ""
        click.echo(f"{folder.name:<30} {label:<12} {name}".rstrip())


def _add_control_commands() -> None:
    """schedule, plan, send, pause, resume, cancel and status live in control_cli.py."""
    from newsletter.campaigns.control_cli import COMMANDS

    for command in COMMANDS:
        campaign.add_command(command)


_add_control_commands()
