"""Who is signed in to /admin, for how long, and what their role lets them do.

Flask-Login keeps the account's id in Flask's signed session cookie. Two times ride along: when
the person signed in (a password reset after it ends the session) and when they were last seen
(``ADMIN_SESSION_IDLE_MINUTES`` without a request ends it). Both are read from the engine's clock.
Every /admin view declares the role it needs with :func:`requires`; a view without one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from newsletter.core import clock
from newsletter.models import Account, Role
from newsletter.web import db

login_manager = LoginManager()
login_manager.login_view = "admin.login"
login_manager.login_message = "Please sign in."
login_manager.login_message_category = "info"
#: no "remember me" cookie: a session lasts as long as it is used, and no longer
SIGNED_IN_AT = "admin_signed_in_at"
SEEN_AT = "admin_seen_at"


@dataclass(frozen=True)
class SignedIn(UserMixin):
    """The signed-in account as the request sees it (a copy: no database session outlives a request)."""

    id: int
    email: str
    role: Role

    def may(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def _stamp(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


@login_manager.user_loader
def _load(account_id: str) -> SignedIn | None:
    account = db().get(Account, int(account_id)) if account_id.isdigit() else None
    signed_in = session.get(SIGNED_IN_AT)
    if account is None or signed_in is None or _stamp(account.password_changed_at) > signed_in:
        return None  # removed, or its password was reset since: signed out
    return SignedIn(account.id, account.email, account.role)


def sign_in(account: Account) -> None:
    # a fresh session: nothing set before signing in (by anyone who could set it) carries over
    session.clear()
    now = _stamp(clock.now())
    login_user(SignedIn(account.id, account.email, account.role))
    session[SIGNED_IN_AT] = session[SEEN_AT] = now


def sign_out() -> None:
    logout_user()
    session.clear()


def check_idle() -> None:
    """Before every /admin request: end a session idle for too long, else note that it was used."""
    if not current_user.is_authenticated:
        return
    now = _stamp(clock.now())
    seen = session.get(SEEN_AT)
    if seen is None or now - seen > current_app.settings.admin_session_idle_minutes * 60:
        sign_out()
        flash("Your session expired. Please sign in again.", "info")
        return
    session[SEEN_AT] = now


def requires(role: Role):
    """The view needs an account of ``role`` or above: no account -> the sign-in page, too low -> 403."""

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if not current_user.may(role):
                abort(403, f"This needs the {role.value} role; your account is a {current_user.role.value}.")
            return view(*args, **kwargs)

        guarded.required_role = role
        return guarded

    return decorate


def public(view):
    """The one kind of /admin view without an account: the sign-in page."""
    view.required_role = None
    return view


def check_declared() -> None:
    """Refuse a view that declares no role: forgetting ``requires`` must not open a page."""
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and not hasattr(view, "required_role"):
        abort(403)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path under /admin on this site, never another host."""
    text = target or ""
    parts = urlsplit(text)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or "\\" in text:
        return url_for("admin.overview")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def unauthorized():
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(url_for("admin.login", next=request.full_path if request.query_string else request.path))


login_manager.unauthorized_handler(unauthorized)
