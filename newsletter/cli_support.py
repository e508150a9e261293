"""What every command group shares: building the app for one command, reporting bad rows."""

from __future__ import annotations

from functools import wraps

import click

from newsletter.core.config import ConfigError


def with_app(func):
    """Build the app (one-line error on bad configuration) and pass it first."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        from newsletter import create_app

        try:
            app = create_app()
        except ConfigError as exc:
            raise click.ClickException(f"configuration: {exc}") from None
        try:
            with app.app_context():
                return func(app, *args, **kwargs)
        finally:
            app.extensions["newsletter"].engine.dispose()  # no pooled connection outlives the command

    return wrapper


def print_errors(csv_file: str, errors: list[tuple[int, str]], bad: int) -> None:
    for line, reason in errors:
        click.echo(f"{csv_file}: line {line}: {reason}", err=True)
    if bad > len(errors):
        click.echo(f"{csv_file}: ... and {bad - len(errors)} more bad rows", err=True)
