"""``newsletter codes ...``: pools of reward codes the store made (docs/store-mail.md)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


@click.group()
def codes() -> None:
    """Reward code pools: import the store's codes, see how many are left."""


@codes.command("import")
@click.argument("pool")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@with_app
def codes_import(app: Flask, pool: str, csv_file: str) -> None:
    """Add the codes of CSV_FILE (one per line, or a ``code`` column) to POOL; all or nothing."""
    from newsletter.campaigns import rewards

    if not rewards.POOL_NAME.match(pool):
        raise click.ClickException(f"pool name {pool!r}: use a-z, 0-9, - and _ (at most 100)")
    try:
        with open(csv_file, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{csv_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    with app.extensions["newsletter"].sessions() as session:
        report = rewards.import_codes(session, pool, text)
        if report.bad:
            session.rollback()
        else:
            session.commit()
    for line, message in report.bad + report.duplicates:
        click.echo(f"{csv_file}:{line}: {message}", err=True)
    if report.bad:
        click.echo(f"codes: nothing imported, {len(report.bad)} bad lines", err=True)
        sys.exit(1)
    click.echo(
        f"codes: {report.added} added to pool {pool}, {len(report.duplicates)} duplicates skipped, "
        f"{report.blank} blank lines"
    )


@codes.command("list")
@with_app
def codes_list(app: Flask) -> None:
    """Each pool: codes loaded, assigned to a delivery, free, redeemed."""
    from newsletter.campaigns import rewards

    with app.extensions["newsletter"].sessions() as session:
        found = rewards.pools(session)
    if not found:
        click.echo("no reward code pools (newsletter codes import NAME FILE.csv)")
        return
    click.echo(f"{'pool':<30} {'total':>8} {'assigned':>9} {'free':>8} {'redeemed':>9}")
    for p in found:
        click.echo(f"{p.pool:<30} {p.total:>8} {p.assigned:>9} {p.free:>8} {p.redeemed:>9}")
