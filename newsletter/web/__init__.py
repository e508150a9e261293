"""Wiring of the web app: configuration, runtime, CSRF, the request's session, error pages.

The blueprints come from the features; ``create_app`` registers them.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from newsletter.core.config import load_config
from newsletter.core.runtime import Runtime, set_runtime

log = logging.getLogger(__name__)
csrf = CSRFProtect()


def setup(app: Flask, test_config: dict[str, Any] | None) -> None:
    config = load_config(app.instance_path, overrides=test_config)
    app.config.update(config)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # no form needs more than this
    runtime = Runtime.from_config(config)
    app.extensions["newsletter"] = runtime
    set_runtime(runtime)
    csrf.init_app(app)
    app.teardown_appcontext(_close_session)
    _register_error_pages(app)


def runtime() -> Runtime:
    from flask import current_app

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


def _register_error_pages(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return render_template(
            "web/error.html",
            title="Please try again",
            message="This form has expired or was not sent from our page. "
            "Please go back, reload the page and submit it again.",
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return render_template("web/error.html", title=exc.name, message=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return render_template(
            "web/error.html",
            title="Something went wrong",
            message="Nothing was changed. Please try again in a moment.",
        ), 500
