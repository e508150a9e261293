"""Signup and confirmation views: validate, call one service, render."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from wtforms import SelectChoice

from newsletter.mail.addresses import InvalidAddress, mailbox_hash, normalize_address
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscribers import limits, links, lost_links, order_invitation, sharing, signup, wording
from newsletter.subscribers.consent import RequestInfo
from newsletter.subscribers.forms import ConfirmForm, JoinForm, LinksForm, ResendForm, SubscribeForm
from newsletter.subscribers.jobs import send_transactional
from newsletter.subscribers.sharing import request_shares
from newsletter.subscribers.tokens import Purpose, TokenError
from newsletter.subscribers.wording import partner_wording, signup_wording
from newsletter.web import db, runtime
from newsletter.web.fixed_pages import render_fixed
from newsletter.web.i18n import page_language, use_language

bp = Blueprint("public", __name__)
# The wording files are read and checked when the app is built: a bad one stops the start, in one line.
bp.record_once(lambda state: wording.catalog_of(state.app.settings))


def request_info(source: str) -> RequestInfo:
    return RequestInfo(ip=request.remote_addr, user_agent=request.headers.get("User-Agent"), source=source)


@bp.get("/")
def index():
    return redirect(url_for("public.subscribe"))


@bp.route("/subscribe", methods=["GET", "POST"])
def subscribe():
    settings = current_app.settings
    language = page_language()
    consent = signup_wording(settings, language)
    form = SubscribeForm()
    topics = list(signup.topics_by_slug(db()).values())
    form.topics.choices = [SelectChoice(t.slug, t.name) for t in topics]
    partner_names = sharing.partner_names(db())
    form.partners.choices = [SelectChoice(pid, name) for pid, name in partner_names.items()]
    partner_wordings = {pid: partner_wording(settings, name, language) for pid, name in partner_names.items()}

    if request.method == "POST":
        valid = form.validate_on_submit()
        # the syntax here; DNS (if on) after the limits
        email, counted = _address_and_limits(form, valid and not form.website.data)
        if not counted.ip_allowed:
            return _too_many()
        if valid and form.website.data:
            # A bot filled the honeypot: answer as usual, keep nothing.
            return render_fixed("web/check_inbox.html")
        if email is not None and settings.check_deliverability:
            try:
                email = normalize_address(email, check_deliverability=True)
            except InvalidAddress as exc:
                form.email.errors = [str(exc)]
                if counted.mail is not None:
                    limits.give_back_confirmation(runtime().redis, mailbox_hash(email))
                email = None
        if email is not None:

            def attempt():
                outcome = signup.request_signup(
                    db(),
                    runtime().redis,
                    settings,
                    email=email,
                    first_name=(form.first_name.data or "").strip() or None,
                    topic_slugs=form.topics.data,
                    wording=consent,
                    request=request_info("web:subscribe"),
                    dispatch=partial(send_transactional, runtime()),
                    counted=counted,
                    language=language,
                )
                if form.partners.data:
                    request_shares(db(), outcome.subscriber_id, form.partners.data, partner_wordings)
                db().commit()

            signup.retry_on_conflict(attempt, db())
            return render_fixed("web/check_inbox.html")
        status = 400
    else:
        status = 200
    return render_template(
        "web/subscribe.html", form=form, topics=topics, wording=consent, partner_wordings=partner_wordings
    ), status


@bp.get("/confirm/<token>")
def confirm_page(token: str):
    """Shows one Confirm button and changes nothing: link scanners GET every link."""
    try:
        subscriber, payload = links.read_link(db(), current_app.settings, Purpose.CONFIRM, token)
    except TokenError as exc:
        return _link_problem(exc, token)
    use_language(subscriber.language)
    if signup.request_of_link(db(), subscriber, payload) is None:
        if subscriber.status != SubscriberStatus.ACTIVE:
            return _link_closed()
        return render_template("web/confirm.html", form=ConfirmForm(), token=token, already=True)
    return render_template("web/confirm.html", form=ConfirmForm(), token=token, already=False)


@bp.post("/confirm/<token>")
def confirm(token: str):
    form = ConfirmForm()
    try:
        subscriber, payload = links.read_link(db(), current_app.settings, Purpose.CONFIRM, token)
    except TokenError as exc:
        return _link_problem(exc, token)
    use_language(subscriber.language)
    if not form.validate_on_submit():
        return render_template("web/confirm.html", form=form, token=token, already=False), 400
    asked = signup.request_of_link(db(), subscriber, payload)
    outcome = signup.confirm(
        db(),
        subscriber,
        asked,
        request_info("web:confirm"),
        settings=current_app.settings,
        dispatch=partial(send_transactional, runtime()),
    )
    db().commit()
    if outcome == signup.Confirmation.CLOSED:
        return _link_closed()
    if outcome == signup.Confirmation.REFUSED:
        return _refused()
    return render_template(
        "web/confirmed.html",
        topics=[
            s.topic.name_in(page_language())
            for s in subscriber.subscriptions
            if s.status == "active" and s.topic.retired_at is None
        ],
        preferences_url=links.preferences_url(current_app.settings, subscriber),
    )


@bp.post("/confirm/<token>/resend")
def resend(token: str):
    form = ResendForm()
    try:
        links.read_link(db(), current_app.settings, Purpose.CONFIRM, token)
        return redirect(url_for("public.confirm_page", token=token))  # still valid: nothing to resend
    except TokenError as exc:
        subscriber = exc.payload if exc.expired else None
        payload = exc.link_payload
    if subscriber is None or not form.validate_on_submit():
        return _link_problem(TokenError("this link is not valid"), token)
    use_language(subscriber.language)
    asked = signup.request_of_link(db(), subscriber, payload)
    if asked is None:
        return _link_closed()  # answered or overtaken since: a fresh link would confirm nothing
    signup.resend_confirmation(
        db(), runtime().redis, current_app.settings, subscriber, asked, partial(send_transactional, runtime())
    )
    db().commit()
    return render_fixed("web/check_inbox.html")


@bp.route("/join/<token>", methods=["GET", "POST"])
def join(token: str):
    """An order invitation: GET shows the topics and the button and changes nothing (link scanners);
    only the person's POST subscribes them."""
    settings = current_app.settings
    try:
        invitation = order_invitation.read(db(), settings, token)
    except TokenError as exc:
        return _invitation_problem(exc)
    if invitation.subscriber is not None:
        use_language(invitation.subscriber.language)
        if invitation.subscriber.status == SubscriberStatus.ACTIVE:
            return render_template("web/confirm.html", form=ConfirmForm(), token=token, already=True)
    consent = signup_wording(settings, page_language())
    topics = list(signup.topics_by_slug(db()).values())
    form = JoinForm()
    form.topics.choices = [SelectChoice(t.slug, t.name) for t in topics]
    if request.method == "GET":
        return render_template("web/join.html", form=form, token=token, topics=topics, wording=consent)
    if not form.validate_on_submit():
        return render_template("web/join.html", form=form, token=token, topics=topics, wording=consent), 400

    def attempt():
        found = order_invitation.read(db(), settings, token)  # again after a rolled-back race
        outcome = order_invitation.accept(
            db(),
            settings,
            found,
            form.topics.data,
            consent,
            request_info(order_invitation.SOURCE),
            partial(send_transactional, runtime()),
        )
        db().commit()
        return outcome

    outcome = signup.retry_on_conflict(attempt, db())
    if outcome == signup.Confirmation.REFUSED:
        return _refused()
    if outcome == signup.Confirmation.ALREADY:
        return render_template("web/confirm.html", form=ConfirmForm(), token=token, already=True)
    joined = order_invitation.read(db(), settings, token).subscriber
    return render_template(
        "web/confirmed.html",
        topics=[t.in_language(page_language()).name for t in topics if t.slug in form.topics.data],
        preferences_url=joined and links.preferences_url(settings, joined),
    )


@bp.route("/links", methods=["GET", "POST"])
def send_links():
    """The "send me my links" page: the same answer whatever the address's state (lost_links.py)."""
    form = LinksForm()
    if request.method == "GET":
        return render_template("web/send_links.html", form=form)
    # the signup's limits: the same per-IP count, and the mailbox's daily cap of such emails
    email, counted = _address_and_limits(form, form.validate_on_submit())
    if not counted.ip_allowed:
        return _too_many()
    if email is None:
        return render_template("web/send_links.html", form=form), 400
    lost_links.request_links(db(), runtime().redis, email, counted, partial(send_transactional, runtime()))
    db().commit()
    return render_template("web/links_sent.html")


def _address_and_limits(form, wanted: bool) -> tuple[str | None, limits.SignupVerdict]:
    """The form's address normalised (None if not ``wanted`` or refused, the refusal on the field),
    and one Redis round trip for the per-IP limit (every POST) and the mailbox's daily cap."""
    email = None
    if wanted:
        try:
            email = normalize_address(form.email.data)
        except InvalidAddress as exc:
            form.email.errors = [str(exc)]
    settings = current_app.settings
    counted = limits.check_signup(
        runtime().redis,
        request.remote_addr or "-",
        settings.signup_rate_limit,
        email and mailbox_hash(email),
        settings.confirmations_per_address,
    )
    return email, counted


def _too_many():
    return render_template(
        "web/error.html",
        title=_("Too many requests"),
        message=_("Too many requests from your network. Please try again in a minute."),
    ), 429


def _invitation_problem(exc: TokenError):
    """No resend for an invitation: it is offered once; the signup form is always open."""
    if exc.gone:
        message = _("This invitation is no longer on file. You can still subscribe with the form.")
    elif exc.expired:
        message = _("This invitation has expired. You can still subscribe with the form.")
    else:
        message = _("This link is not valid. You can still subscribe with the form.")
    return render_template("web/error.html", title=_("This invitation cannot be used"), message=message), (
        410 if exc.gone or exc.expired else 400
    )


def _link_problem(exc: TokenError, token: str):
    if isinstance(exc.payload, Subscriber):  # an expired link still names its subscriber
        use_language(exc.payload.language)
    return render_template(
        "web/link_problem.html",
        expired=exc.expired and exc.payload is not None,
        form=ResendForm(),
        token=token,
    ), 400


def _refused():
    """The address is on the suppression list for good (a complaint, an operator's entry)."""
    return render_template(
        "web/error.html",
        title=_("We cannot add this address"),
        message=_(
            "This address asked us never to write to it. Please contact the store if that has changed."
        ),
    ), 409


def _link_closed():
    """The link's request was answered or overtaken (an unsubscribe since, ...): offer a fresh signup."""
    return render_template("web/link_problem.html", closed=True, expired=False, token=None), 410
