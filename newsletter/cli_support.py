"""What every command group shares: the app for one command, one-line outage errors, bad rows."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from functools import wraps
from typing import TYPE_CHECKING

import click

from newsletter.core.config import Settings

if TYPE_CHECKING:  # Redis and SQLAlchemy are imported when a command runs, not for --help
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


def with_app(func):
    """Build the app (one-line error on bad configuration) and pass it first.

    Redis or the database unreachable is one line naming the setting and the address.
    """

    @wraps(func)
    def wrapper(*args, **kwargs):
        from newsletter import create_app
        from newsletter.core.config import ConfigError

        try:
            app = create_app()
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        runtime = app.extensions["newsletter"]
        try:
            with outages_as_errors(runtime.settings, runtime.engine), app.app_context():
                return func(app, *args, **kwargs)
        finally:
            runtime.engine.dispose()  # no pooled connection outlives the command

    return wrapper


@contextmanager
def outages_as_errors(settings: Settings, engine: Engine):
    """Turn "cannot reach Redis / the database" into a one-line ClickException (traceback at DEBUG)."""
    import redis
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.debug("Redis unreachable", exc_info=True)
        message = unreachable("Redis", "NEWSLETTER_REDIS_URL", settings.redis_url, exc)
        raise click.ClickException(message) from None
    except DBAPIError:
        reason = database_unreachable(engine)
        if reason is None:
            raise  # reachable: a real error about the data or the schema
        log.debug("database unreachable", exc_info=True)
        raise click.ClickException(
            unreachable("the database", "NEWSLETTER_DATABASE_URL", settings.database_url, reason)
        ) from None


def database_unreachable(engine: Engine) -> str | None:
    """Why no connection to the database can be opened, or None when one can."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect():
            return None
    except DBAPIError as exc:
        return str(exc.orig or exc)


def unreachable(what: str, setting: str, url: str, reason: object) -> str:
    """``cannot reach WHAT at ADDRESS (SETTING): REASON`` on one line, without the password."""
    first_line = next((line.strip() for line in str(reason).splitlines() if line.strip()), "")
    return f"cannot reach {what} at {safe_url(url)} ({setting}): {first_line}"


def safe_url(url: str) -> str:
    """The URL with its password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not parseable: show only the scheme
        return url.split("://", 1)[0] + "://..."


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values are loaded when first needed, not when the command is defined.

    For choices that come from a model's enum: the models import SQLAlchemy, which
    ``newsletter --help`` and the other commands' help should not pay for.
    """

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices


def exit_if_refused(csv_file: str, bad: int, applied: str) -> None:
    """Exit 1 when rows were refused (scripts see it), saying how many and where; ``applied``: the rest."""
    if bad:
        click.echo(
            f"{csv_file}: {bad} row(s) refused (their line numbers above); {applied}; "
            "fix them and import the file again (applied rows are not repeated)",
            err=True,
        )
        sys.exit(1)


def print_errors(csv_file: str, errors: list[tuple[int, str]], bad: int) -> None:
    for line, reason in errors:
        click.echo(f"{csv_file}: line {line}: {reason}", err=True)
    if bad > len(errors):
        click.echo(f"{csv_file}: ... and {bad - len(errors)} more bad rows", err=True)
