"""The ``newsletter`` command: init, db, worker, sweep, demo; each feature brings its own group.

Modules imported here import nothing heavy at import time (Flask, SQLAlchemy, Redis, MJML,
premailer, the browser driver): each command imports what it uses, so ``--help`` starts fast.
tests/test_cli_startup.py holds that line.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.admin.cli import users
from newsletter.campaigns.cli import campaign
from newsletter.campaigns.codes_cli import codes
from newsletter.cli_support import with_app
from newsletter.customers.cli import customers
from newsletter.feedback.cli import bounces
from newsletter.feedback.dkim_cli import dkim, dns
from newsletter.partners.cli import partners
from newsletter.store_events.cli import events
from newsletter.subscribers.cli import subscribers, suppressions
from newsletter.subscribers.topics_cli import topics

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
@click.version_option(package_name="newsletter", message="%(package)s %(version)s")
def cli() -> None:
    """newsletter: an opt-in email marketing engine for online stores."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd ("mail.log") logs every connection: bounces serve logs one line per report instead
    for noisy in ("alembic", "werkzeug", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
def init() -> None:
    """Create the instance folder with a config.toml holding a fresh secret key."""
    from newsletter.core.runtime import default_instance_path

    instance = default_instance_path()
    instance.mkdir(parents=True, exist_ok=True)
    config_file = instance / "config.toml"
    if config_file.exists():
        click.echo(f"{config_file} exists; left as it is")
        return
    config_file.write_text(f'secret_key = "{secrets.token_urlsafe(32)}"\n', "utf-8")
    config_file.chmod(0o600)
    click.echo(f"wrote {config_file}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@with_app
def db_upgrade(app: Flask, revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from newsletter.core.migrate import upgrade

    upgrade(app.settings.database_url, revision)
    click.echo(f"database at {revision}")


@cli.command()
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then stop.")
@click.option("--queue", "queues", multiple=True, help="Queues to serve (default: all, transactional first).")
@with_app
def worker(app: Flask, burst: bool, queues: tuple[str, ...]) -> None:
    """Run an RQ worker with the app's configuration."""
    from newsletter.core.config import example_identity
    from newsletter.mail.dkim import DKIMError, signer_for
    from newsletter.worker import run_worker

    try:  # a configured key that cannot be used: one line now, not an error per message later
        signer_for(app.settings)
    except DKIMError as exc:
        raise click.ClickException(str(exc)) from None
    app.extensions["newsletter"].redis.ping()  # an outage stays the one line it is, before any warning
    for problem in example_identity(app.settings):  # fine for `make demo`, not for a store's mail
        click.echo(f"warning: {problem}: set NEWSLETTER_{problem.split()[0]} to the store's own", err=True)
    # RQ's work() answers whether any job ran: an empty queue in --burst is a clean stop, not a failure
    run_worker(app.extensions["newsletter"], list(queues) or None, burst=burst)


@cli.command()
@with_app
def sweep(app: Flask) -> None:
    """Enqueue transactional mail that never reached a worker (e.g. Redis was down)."""
    from newsletter.subscribers.jobs import sweep_outbox

    click.echo(f"re-enqueued {sweep_outbox()} emails")


@cli.command()
@click.option("--keep-going", is_flag=True, hidden=True)
def demo(keep_going: bool) -> None:
    """Run a signup end to end: real HTTP app, real worker, Maildir outbox."""
    from newsletter.core.config import ConfigError
    from newsletter.demo import run_demo

    try:
        run_demo(Path.cwd())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


cli.add_command(subscribers)
cli.add_command(suppressions)
cli.add_command(topics)
cli.add_command(customers)
cli.add_command(events)
cli.add_command(partners)
cli.add_command(campaign)
cli.add_command(codes)
cli.add_command(dkim)
cli.add_command(dns)
cli.add_command(bounces)
cli.add_command(users)


def main() -> None:  # pragma: no cover - console entry point
    cli()
