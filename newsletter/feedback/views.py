"""The tracked links and the open pixel: ``GET /c/<token>/<n>`` and ``GET /o/<token>``.

A click redirects (302) only to link ``n`` of the delivery's frozen campaign; nothing in the
query string is ever followed. A token that does not verify, or a link the message does not
hold, gets a friendly 404 page, never a redirect. The person matters more than the count: a
scanner is redirected too, and so is a click while the database is down (when this process
knows the link), the click being lost with one log line.
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, Response, current_app, redirect, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from newsletter.campaigns import tracking
from newsletter.feedback import clicks
from newsletter.web import db

log = logging.getLogger(__name__)
bp = Blueprint("tracking", __name__)

#: a transparent 1x1 GIF (42 bytes)
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
}


def _not_found():
    return render_template(
        "web/error.html",
        title="This link does not work",
        message="It may have been cut short or changed when it was copied. Please open it again "
        "from the email you got from us.",
    ), 404


def _unavailable():
    return render_template(
        "web/error.html",
        title="Please try again in a moment",
        message="We cannot open this link right now. Please try again in a few minutes.",
    ), 503


@bp.get("/c/<token>/<int:n>")  # HEAD too (Flask answers HEAD on GET routes): scanners send it
def click(token: str, n: int):
    ref = tracking.read_token(current_app.settings, token)
    if ref is None:
        return _not_found()
    user_agent = request.headers.get("User-Agent")
    try:
        followed = clicks.follow(
            db(), current_app.settings, ref, n, method=request.method, user_agent=user_agent
        )
        db().commit()
        url = followed.url if followed else None
    except SQLAlchemyError as exc:
        db().rollback()
        url = clicks.known_link(ref.campaign_id, n)
        log.warning(
            "click on delivery %s link %s not recorded (database: %s); %s",
            ref.delivery_id,
            n,
            type(exc).__name__,
            "redirected from the cached links" if url else "link unknown to this process",
        )
        if url is None:
            return _unavailable()
    if url is None:
        return _not_found()
    response = redirect(url, code=302)
    response.headers.update({"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
    return response


@bp.get("/o/<token>")
def open_pixel(token: str):
    ref = tracking.read_token(current_app.settings, token)
    if ref is None:
        return Response(status=404, headers=NO_CACHE)
    if request.method == "GET":  # a HEAD is a probe, not an open
        try:
            clicks.open_pixel(db(), current_app.settings, ref, user_agent=request.headers.get("User-Agent"))
            db().commit()
        except SQLAlchemyError as exc:
            db().rollback()
            log.warning(
                "open of delivery %s not recorded (database: %s)", ref.delivery_id, type(exc).__name__
            )
    return Response(GIF, mimetype="image/gif", headers=NO_CACHE)
