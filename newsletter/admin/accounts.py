"""Accounts of the store's own people: add, list, remove, reset a password, sign in.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
profile); a hash made with older parameters is replaced at the next successful sign-in.
Services flush; the command or the request commits.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from newsletter.core import clock
from newsletter.mail.addresses import InvalidAddress, normalize_address
from newsletter.models import Account, Role

#: long enough that a lock-out of a few guesses per quarter hour makes guessing hopeless
MIN_PASSWORD = 12
#: Argon2 hashes whatever it is given; a megabyte password would only cost us time
MAX_PASSWORD = 1024
#: Account.email's column, and the actor column of campaign_events
MAX_EMAIL = 100

_hasher = PasswordHasher()


class AccountError(ValueError):
    """The account cannot be made or changed; the message says why in one line."""


def normalise_email(raw: str) -> str:
    """The sign-in name: the address as email-validator normalises it, in lower case."""
    try:
        email = normalize_address(raw).lower()
    except InvalidAddress as exc:
        raise AccountError(f"{raw.strip()!r}: {exc}") from None
    if len(email) > MAX_EMAIL:
        raise AccountError(f"{email}: at most {MAX_EMAIL} characters")
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password may have at most {MAX_PASSWORD} characters")
    return password


def find(session: Session, email: str) -> Account | None:
    return session.scalar(select(Account).where(Account.email == email.strip().lower()))


def add_account(session: Session, email: str, role: Role, password: str) -> Account:
    email = normalise_email(email)
    if find(session, email) is not None:
        raise AccountError(f"{email} already has an account (reset its password instead)")
    account = Account(email=email, role=Role(role), password_hash=_hasher.hash(check_password(password)))
    session.add(account)
    session.flush()
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.email)))


def remove_account(session: Session, email: str) -> Account:
    """Delete the account; refused for the last admin (nobody could manage accounts from the site)."""
    account = _existing(session, email)
    if account.role == Role.ADMIN:
        admins = session.scalar(select(func.count()).where(Account.role == Role.ADMIN))
        if admins == 1:
            raise AccountError(f"{account.email} is the last admin; add another admin first")
    session.delete(account)
    session.flush()
    return account


def reset_password(session: Session, email: str, password: str) -> Account:
    """A new password; every session signed in before now ends (``password_changed_at``)."""
    account = _existing(session, email)
    account.password_hash = _hasher.hash(check_password(password))
    account.password_changed_at = clock.now()
    session.flush()
    return account


def authenticate(session: Session, email: str, password: str) -> Account | None:
    """The account if the password is its own, else None (an unknown address costs the same time)."""
    account = find(session, email) if len(email) <= MAX_EMAIL else None
    if account is None or len(password) > MAX_PASSWORD:
        _verify(_dummy_hash(), password[:MAX_PASSWORD])
        return None
    if not _verify(account.password_hash, password):
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    account.last_login_at = clock.now()
    session.flush()
    return account


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not anybody's password")


def _existing(session: Session, email: str) -> Account:
    account = find(session, email)
    if account is None:
        raise AccountError(f"{email.strip().lower()}: no such account")
    return account
