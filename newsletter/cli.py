"""The ``newsletter`` command: thin click wrappers over services."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from functools import wraps
from pathlib import Path

import click
from flask import Flask

from newsletter.config import ConfigError


def with_app(func):
    """Build the app (one-line error on bad configuration) and pass it first."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        from newsletter import create_app

        try:
            app = create_app()
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        with app.app_context():
            return func(app, *args, **kwargs)

    return wrapper


@click.group()
def cli() -> None:
    """newsletter: an opt-in email marketing engine for online stores."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
def init() -> None:
    """Create the instance folder with a config.toml holding a fresh secret key."""
    from newsletter.runtime import default_instance_path

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
    from newsletter.migrate import upgrade

    upgrade(app.config["DATABASE_URL"], revision)
    click.echo(f"database at {revision}")


@cli.command()
@click.option("--burst", is_flag=True, help="Work until the queues are empty, then stop.")
@click.option("--queue", "queues", multiple=True, help="Queues to serve (default: all, transactional first).")
@with_app
def worker(app: Flask, burst: bool, queues: tuple[str, ...]) -> None:
    """Run an RQ worker with the app's configuration."""
    from newsletter.worker import run_worker

    ok = run_worker(app.extensions["newsletter"], list(queues) or None, burst=burst)
    sys.exit(0 if ok else 1)


@cli.command()
@with_app
def sweep(app: Flask) -> None:
    """Enqueue transactional mail that never reached a worker (e.g. Redis was down)."""
    from newsletter.jobs import sweep_outbox

    click.echo(f"re-enqueued {sweep_outbox()} emails")


@cli.group()
def subscribers() -> None:
    """Look at subscribers."""


@subscribers.command("show")
@click.argument("email")
@with_app
def subscribers_show(app: Flask, email: str) -> None:
    """Print a subscriber's status, topics and consent ledger as JSON."""
    from newsletter.services.addresses import InvalidAddress, normalize_address
    from newsletter.services.subscribers import describe_subscriber

    try:
        address = normalize_address(email)
    except InvalidAddress as exc:
        raise click.ClickException(f"{email!r}: {exc}") from None
    with app.extensions["newsletter"].sessions() as session:
        data = describe_subscriber(session, address)
    if data is None:
        raise click.ClickException(f"no subscriber with address {address}")
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@cli.command()
@click.option("--keep-going", is_flag=True, hidden=True)
def demo(keep_going: bool) -> None:
    """Run a signup end to end: real HTTP app, real worker, Maildir outbox."""
    from newsletter.demo import run_demo

    try:
        run_demo(Path.cwd())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def main() -> None:  # pragma: no cover - console entry point
    cli()
