"""/admin's people pages: subscribers (search, a profile), the suppression list, partner exchanges.

Read-only and thin: each view parses its query string and reads one service
(subscribers/lookup.py, subscribers/suppression.py, partners/reports.py). Personal data: every
account (viewer and up) sees these pages, and each profile view is logged with the account.
"""

from __future__ import annotations

import logging

from flask import render_template, request, url_for
from flask_login import current_user

from newsletter.admin import auth
from newsletter.admin.blueprint import bp
from newsletter.mail.addresses import InvalidAddress
from newsletter.models import Role, SuppressionReason
from newsletter.partners import reports
from newsletter.subscribers import lookup, suppression
from newsletter.web import db

log = logging.getLogger(__name__)
#: ids are INTEGER columns: a larger number names nobody (and would overflow PostgreSQL's parameter)
MAX_ID = 2**31 - 1
#: rows on a page of each list
PAGE_SIZE = 50


def _cursor(name: str) -> int | None:
    """A page link's ``after``/``before`` id; anything else is ignored (the first page)."""
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and 0 < int(value) <= MAX_ID else None


def _pages(page, endpoint: str, **args) -> dict[str, str | None]:
    """The previous and next page links of a keyset page, keeping the page's filters."""
    kept = {k: v for k, v in args.items() if v}
    return {
        "previous": url_for(endpoint, before=page.before, **kept) if page.before else None,
        "next": url_for(endpoint, after=page.after, **kept) if page.after else None,
        "first": url_for(endpoint, **kept) if page.before else None,
    }


@bp.get("/subscribers")
@auth.requires(Role.VIEWER)
def subscribers():
    raw = request.args.get("q", "")
    try:
        query = lookup.clean_query(raw)
    except lookup.BadQuery as exc:
        return render_template(
            "web/admin/subscribers.html", q=raw[: lookup.MAX_QUERY], error=str(exc), page=None
        ), 400
    page = lookup.search(db(), query, after=_cursor("after"), before=_cursor("before"), size=PAGE_SIZE)
    return render_template(
        "web/admin/subscribers.html", q=query, page=page, links=_pages(page, ".subscribers", q=query)
    )


@bp.get("/subscribers/<int:subscriber_id>")
@auth.requires(Role.VIEWER)
def subscriber(subscriber_id: int):
    found = lookup.profile(db(), subscriber_id) if subscriber_id <= MAX_ID else None
    if found is None:
        message = f"There is no subscriber #{subscriber_id}. It may have been deleted, or the link is wrong."
        return render_template("web/admin/not_found.html", title="No such subscriber", message=message), 404
    # who looked at whose data, for the store's own records (the id, never the address)
    log.info("admin %s viewed subscriber %d", current_user.email, subscriber_id)
    return render_template("web/admin/subscriber.html", p=found)


@bp.get("/suppressions")
@auth.requires(Role.VIEWER)
def suppressions():
    raw, wanted = request.args.get("q", "").strip(), request.args.get("reason", "")
    reasons = [r.value for r in SuppressionReason]
    error = None
    email_hash = reason = None
    try:
        email_hash = suppression.hash_for(raw) if raw else None
    except InvalidAddress as exc:
        error = f"{raw[:100]!r} is neither an address nor an address hash: {exc}"
    if wanted and wanted not in reasons:
        error = f"{wanted[:40]!r} is not a reason; the reasons are {', '.join(reasons)}."
    elif wanted:
        reason = SuppressionReason(wanted)
    if error:
        context = {"q": raw[:320], "reason": wanted[:40], "reasons": reasons, "error": error, "page": None}
        return render_template("web/admin/suppressions.html", **context), 400
    page = suppression.browse(
        db(), email_hash, reason, after=_cursor("after"), before=_cursor("before"), size=PAGE_SIZE
    )
    return render_template(
        "web/admin/suppressions.html",
        q=raw,
        reason=wanted,
        reasons=reasons,
        page=page,
        links=_pages(page, ".suppressions", q=raw, reason=wanted),
    )


@bp.get("/partners")
@auth.requires(Role.VIEWER)
def partners():
    session = db()
    page = reports.imports(session, after=_cursor("after"), before=_cursor("before"), size=PAGE_SIZE)
    return render_template(
        "web/admin/partners.html",
        summaries=reports.summaries(session),
        page=page,
        links=_pages(page, ".partners"),
    )
