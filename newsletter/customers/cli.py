"""``newsletter customers ...``: customer data from the store as a CSV file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from newsletter.cli_support import exit_if_refused, print_errors, with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
def customers() -> None:
    """What the store knows about its customers (orders, lifetime value, tier, attributes)."""


@customers.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@with_app
def customers_import(app: Flask, csv_file: str) -> None:
    """Upsert customer data from a CSV (see docs/customers.md); bad rows are reported, good ones applied."""
    from newsletter.customers.records import import_csv

    try:
        with (
            open(csv_file, encoding="utf-8-sig", newline="") as handle,
            app.extensions["newsletter"].sessions() as session,
        ):
            report = import_csv(session, handle)
            session.commit()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    print_errors(csv_file, report.errors, report.bad)
    click.echo(
        f"customers: {report.applied} applied ({report.created} new, {report.updated} updated), "
        f"{report.bad} bad rows"
    )
    exit_if_refused(csv_file, report.bad, f"the other {report.applied} were applied")
