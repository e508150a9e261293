"""Wiring of the web app: settings, runtime, CSRF, the request's session, error pages.

The blueprints come from the features; ``create_app`` registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import FormDataParser

from newsletter.core.config import Settings, load_settings
from newsletter.core.runtime import Runtime, set_runtime
from newsletter.web import i18n, security, theme

log = logging.getLogger(__name__)
csrf = CSRFProtect()


class _NamedFieldsParser(FormDataParser):
    """Drops multipart parts without a readable name: werkzeug keys them ``None``, and every
    reader of ``request.form`` (Flask-WTF's CSRF check first) expects text keys."""

    def parse(self, *args: Any, **kwargs: Any) -> tuple[Any, MultiDict, MultiDict]:
        stream, form, files = super().parse(*args, **kwargs)
        return stream, self._named(form), self._named(files)

    def _named(self, fields: MultiDict) -> MultiDict:
        if None not in fields:
            return fields
        return self.cls((key, value) for key, value in fields.items(multi=True) if key is not None)


class _Request(Request):
    form_data_parser_class = _NamedFieldsParser


class App(Flask):
    """The Flask app with the engine's settings: ``app.settings``, ``current_app.settings``."""

    settings: Settings


def setup(app: App, test_config: Mapping[str, Any] | None) -> None:
    settings = load_settings(app.instance_path, overrides=test_config)
    # Ours are read as app.settings; Flask and Flask-WTF get the few keys they read themselves.
    app.settings = settings
    app.config["SECRET_KEY"] = settings.secret_key
    app.config["WTF_CSRF_ENABLED"] = settings.wtf_csrf_enabled
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # no form needs more than this
    runtime = Runtime.from_settings(settings)
    app.extensions["newsletter"] = runtime
    set_runtime(runtime)
    security.init_app(app, settings)
    csrf.init_app(app)
    i18n.init_app(app, settings)
    theme.init_app(app, settings)
    app.teardown_appcontext(_close_session)
    # every page names the store as its customers know it (the same names campaign files use)
    store = {"name": settings.store_name, "postal_address": settings.postal_address}
    app.context_processor(lambda: {"store": store})
    _register_error_pages(app)


def runtime() -> Runtime:
    return current_app.extensions["newsletter"]


def db() -> Session:
    """The request's database session (committed by the view, closed at teardown)."""
    if "db" not in g:
        g.db = runtime().sessions()
    return g.db


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def home_url() -> str:
    """The signup page's path, built without the request's Host header (it may be what was wrong)."""
    return current_app.url_map.bind("localhost", script_name=request.script_root or "/").build(
        "public.subscribe"
    )


#: what a refused form says, on the public pages and the dashboard alike
CSRF_MESSAGE = (
    "This form has expired or was not sent from our page. "
    "Please go back, reload the page and submit it again."
)


def error_page(title: str, message: str, status: int, template: str = "web/error.html"):
    """JSON under /api/ (its callers are programs), the friendly page elsewhere. A blueprint with a
    look of its own (the dashboard) passes its template, whose link leads back into it."""
    if request.path.startswith("/api/"):
        return jsonify(error=message), status
    return render_template(template, title=title, message=message), status


def _register_error_pages(app: Flask) -> None:
    app.add_template_global(home_url)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return error_page("Please try again", CSRF_MESSAGE, 400)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_page(exc.name, exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The safety net: a bug must still answer in our words, never with a traceback.
        log.exception("unhandled error")
        return error_page("Something went wrong", "Nothing was changed. Please try again in a moment.", 500)
