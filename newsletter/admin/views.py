"""/admin: sign in and out, the campaigns and one campaign with its controls. Thin: each view reads
one service (campaigns/report.py, campaigns/scheduling.py) or calls one, and the role it needs is
declared on it (auth.requires). Other page families live in their own modules on the same
blueprint (admin/blueprint.py); :func:`init_app` imports them."""

from __future__ import annotations

import logging

import redis
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from newsletter.admin import accounts, auth, campaign_page
from newsletter.admin.blueprint import bp
from newsletter.admin.forms import ActionForm, CancelForm, LoginForm
from newsletter.admin.limits import Throttle
from newsletter.campaigns import scheduling, state
from newsletter.campaigns.report import report, table
from newsletter.models import Campaign, CampaignStatus, Role
from newsletter.web import db, runtime

log = logging.getLogger(__name__)


@bp.get("/")
@auth.requires(Role.VIEWER)
def home():
    return redirect(url_for(".overview"))


@bp.route("/login", methods=["GET", "POST"])
@auth.public
def login():
    if request.method == "GET" and current_user.is_authenticated:
        return redirect(auth.safe_next(request.args.get("next")))
    form = LoginForm(next=request.args.get("next", ""))
    if not form.validate_on_submit():
        return render_template("web/admin/login.html", form=form)
    email, ip = form.email.data.strip().lower(), request.remote_addr or "-"
    throttle = Throttle(runtime().redis, current_app.settings)
    try:
        wait = throttle.locked_for(email, ip)
        if wait:
            minutes = -(-wait // 60)
            message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
            return render_template("web/admin/login.html", form=form, error=message), 429
        account = accounts.authenticate(db(), email, form.password.data)
        if account is None:
            throttle.failed(email, ip)
            log.warning("admin sign-in failed for %s from %s", email, ip)
            return render_template("web/admin/login.html", form=form, error="Wrong email or password."), 401
        throttle.succeeded(email, ip)
    except redis.RedisError as exc:
        log.error("admin sign-in refused: the failure counters are unreachable: %s", exc)
        message = "Signing in is unavailable right now (the rate limiter cannot be reached)."
        return render_template("web/admin/login.html", form=form, error=message), 503
    db().commit()
    auth.sign_in(account)
    return redirect(auth.safe_next(form.next.data), 303)


@bp.post("/logout")
@auth.requires(Role.VIEWER)
def logout():
    auth.sign_out()
    flash("Signed out.", "info")
    return redirect(url_for(".login"), 303)


@bp.get("/campaigns")
@auth.requires(Role.VIEWER)
def campaigns():
    session = db()
    found = session.scalars(select(Campaign).order_by(Campaign.scheduled_at.desc(), Campaign.id.desc()))
    # `campaign status`'s own numbers, campaign by campaign
    rows = [(campaign, scheduling.progress(session, campaign)) for campaign in found]
    return render_template("web/admin/campaigns.html", rows=rows, wave_progress=scheduling.wave_progress)


@bp.get("/campaigns/<slug>")
@auth.requires(Role.VIEWER)
def campaign(slug: str):
    session = db()
    found = _campaign_or_404(slug)
    numbers = report(session, current_app.settings, found)
    allowed = state.TRANSITIONS[found.status]
    return render_template(
        "web/admin/campaign.html",
        campaign=found,
        shown=table(numbers),
        page=campaign_page.build(numbers, sale=bool(found.sale_url)),
        events=state.history(session, slug),
        can_pause=CampaignStatus.PAUSED in allowed,
        can_resume=found.status == CampaignStatus.PAUSED,
        can_cancel=CampaignStatus.CANCELLED in allowed,
        action_form=ActionForm(),
        cancel_form=CancelForm(),
    )


@bp.post("/campaigns/<slug>/<action>")
@auth.requires(Role.MARKETER)
def control(slug: str, action: str):
    """Pause, resume or cancel through the state machine, the account named as the actor."""
    if action not in ("pause", "resume", "cancel"):
        abort(404)
    found = _campaign_or_404(slug)
    if action == "cancel" and not CancelForm().confirm.data:
        flash("Tick the box to confirm: a cancelled campaign cannot be resumed.", "error")
        return redirect(url_for(".campaign", slug=slug), 303)
    session, actor = db(), current_user.email
    if action == "pause":
        result = scheduling.pause(session, found, reason=f"paused by {actor} in the dashboard", actor=actor)
    elif action == "resume":
        result = scheduling.resume(session, found, actor=actor)
    else:
        result = scheduling.cancel(session, found, actor=actor)
    session.commit()
    flash(result.message, "ok" if result.ok else "error")
    return redirect(url_for(".campaign", slug=slug), 303)


def _campaign_or_404(slug: str) -> Campaign:
    found = scheduling.find(db(), slug)
    if found is None:
        abort(404, f"No campaign {slug!r} is scheduled.")
    return found


def init_app(app) -> None:
    # the other page families register their views on `bp` when imported (one line each)
    import newsletter.admin.pages  # noqa: F401

    auth.login_manager.init_app(app)
    app.register_blueprint(bp)
