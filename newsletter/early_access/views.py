"""The personal early-access link: into the sale with a code during the subscriber's window."""

from __future__ import annotations

from flask import current_app, redirect, render_template

from newsletter.core import clock
from newsletter.early_access import access as early_access
from newsletter.early_access.access import Access
from newsletter.subscribers import links
from newsletter.subscribers.tokens import Purpose, TokenError
from newsletter.subscribers.views import _link_problem, bp
from newsletter.web import db
from newsletter.web.i18n import use_language

_STATUS = {Access.NOT_YET: 200, Access.PUBLIC: 200, Access.ENDED: 410, Access.NOT_INVITED: 404}


@bp.get("/early-access/<token>")
def early_access_link(token: str):
    """In the window: 303 to the sale with ``nl_code``; otherwise a page saying when or why not.

    Following the link records its first use (a redemption); no subscription state changes.
    """
    try:
        subscriber, payload = links.read_link(db(), current_app.settings, Purpose.EARLY_ACCESS, token)
    except TokenError as exc:
        return _link_problem(exc, token)
    use_language(subscriber.language)
    outcome = early_access.open_link(db(), current_app.settings, subscriber, payload, clock.now())
    db().commit()
    if outcome.access == Access.OPEN:
        response = redirect(outcome.url, code=303)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
    return render_template("web/early_access.html", outcome=outcome, Access=Access), _STATUS[outcome.access]
