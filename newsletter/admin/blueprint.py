"""The /admin blueprint: every dashboard page module registers its views on it, and every request
under it passes the idle check and the declared-role check first (admin/auth.py)."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from newsletter.admin import auth
from newsletter.models import Role
from newsletter.web import CSRF_MESSAGE, error_page

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(auth.check_idle)
bp.before_request(auth.check_declared)


@bp.context_processor
def _page_globals() -> dict:
    def admin_may(role: str) -> bool:
        return current_user.is_authenticated and current_user.may(Role(role))

    return {"store_name": current_app.settings.store_name, "admin_may": admin_may}


# the app's error pages lead back to the signup page; the dashboard's lead back into the dashboard
@bp.errorhandler(CSRFError)
def _refused_form(_exc: CSRFError):
    return error_page("Please try again", CSRF_MESSAGE, 400, template="web/admin/error.html")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return error_page(exc.name, exc.description or exc.name, exc.code or 500, template="web/admin/error.html")
