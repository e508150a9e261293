"""/admin/overview: the list's growth per day and its totals, and the deliverability of the last 30
days against the limits that pause a campaign. Thin: the numbers come from subscribers/growth.py
and feedback/health.py; the page draws them (admin/charts.py) and lists them in tables."""

from __future__ import annotations

from flask import abort, current_app, render_template, request

from newsletter.admin import auth, charts
from newsletter.admin.blueprint import bp
from newsletter.campaigns.report import percent
from newsletter.core import clock
from newsletter.feedback.health import health
from newsletter.models import Role
from newsletter.subscribers import growth
from newsletter.web import db


@bp.get("/overview")
@auth.requires(Role.VIEWER)
def overview():
    days = request.args.get("days", "30")
    if days not in {str(n) for n in growth.WINDOWS}:
        abort(400, f"Show 30, 90 or 365 days, not {days[:20]!r}.")
    session = db()
    # the new ledger events into the daily rollup, the status changes into the tallies; the commit
    # ends the catch-up's lock at once
    growth.catch_up(session)
    growth.fold_changes(session)
    session.commit()
    today = clock.now().date()
    grown = growth.growth(session, today, int(days))
    deliverability = health(session, current_app.settings, today)
    labels = [d.strftime("%b %d") for d in grown.days]
    return render_template(
        "web/admin/overview.html",
        days=int(days),
        percent=percent,
        windows=growth.WINDOWS,
        grown=grown,
        totals=growth.totals(session),
        health=deliverability,
        growth_chart=charts.line(f"List growth, last {days} days", labels, grown.series),
        health_chart=charts.bars(
            "Hard bounces and complaints per day, last 30 days",
            [d.strftime("%b %d") for d in deliverability.days],
            {"hard bounces": deliverability.bounces_per_day, "complaints": deliverability.complaints_per_day},
        ),
    )
