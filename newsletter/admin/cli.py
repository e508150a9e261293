"""``newsletter users add|list|remove|reset-password``: the dashboard's accounts.

A password is never an argument (it would sit in the shell's history and in ``ps``): it is asked
for twice at a prompt that does not echo, or read as the first line of standard input with
``--password-stdin`` (for scripts: ``pass show x | newsletter users add ...``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import LazyChoice, with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


def _roles() -> list[str]:
    from newsletter.core.vocabulary import Role

    return [role.value for role in Role]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise click.ClickException("--password-stdin: standard input held no password")
        return password.removesuffix("\r")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)


@click.group()
def users() -> None:
    """Dashboard (/admin) accounts: viewers read, marketers control campaigns, admins manage accounts."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=LazyChoice(_roles), required=True, help="viewer, marketer or admin.")
@password_stdin
@with_app
def add_command(app: Flask, email: str, role: str, password_stdin: bool) -> None:
    """Create an account; the password is asked for (or read from stdin), never given as an argument."""
    from newsletter.admin.accounts import AccountError, add_account, check_password, normalise_email
    from newsletter.models import Role

    try:
        normalise_email(email)  # a typo in the address is said before the password is asked for
        password = check_password(_password(password_stdin))
        with app.extensions["newsletter"].sessions() as session:
            account = add_account(session, email, Role(role), password)
            session.commit()
            click.echo(f"{account.email}: {account.role.value} account added")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@users.command("list")
@with_app
def list_command(app: Flask) -> None:
    """Every account: address, role, created, last sign-in (never a hash)."""
    from newsletter.admin.accounts import list_accounts

    with app.extensions["newsletter"].sessions() as session:
        found = list_accounts(session)
        if not found:
            click.echo("no accounts yet: newsletter users add EMAIL --role admin")
        for account in found:
            last = f"{account.last_login_at:%Y-%m-%d %H:%M} UTC" if account.last_login_at else "never"
            click.echo(
                f"{account.email}  {account.role.value}  created {account.created_at:%Y-%m-%d}"
                f"  last sign-in {last}"
            )


@users.command("remove")
@click.argument("email")
@with_app
def remove_command(app: Flask, email: str) -> None:
    """Delete an account (its sessions end at their next request); the last admin stays."""
    from newsletter.admin.accounts import AccountError, remove_account

    try:
        with app.extensions["newsletter"].sessions() as session:
            account = remove_account(session, email)
            session.commit()
            click.echo(f"{account.email}: removed")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None


@users.command("reset-password")
@click.argument("email")
@password_stdin
@with_app
def reset_command(app: Flask, email: str, password_stdin: bool) -> None:
    """Set a new password; every session of the account signed in before ends."""
    from newsletter.admin.accounts import AccountError, check_password, find, reset_password

    try:
        with app.extensions["newsletter"].sessions() as session:
            if find(session, email) is None:  # before the prompt: no password typed for nothing
                raise AccountError(f"{email.strip().lower()}: no such account")
            account = reset_password(session, email, check_password(_password(password_stdin)))
            session.commit()
            click.echo(f"{account.email}: password changed; its sessions have ended")
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
