"""The subscriber's own pages: preference centre, unsubscribe (RFC 8058), data download, erasure."""

from __future__ import annotations

import json
from functools import partial

from flask import Response, current_app, render_template, request
from flask_babel import get_locale, refresh
from flask_babel import gettext as _
from wtforms import SelectChoice

from newsletter.core.languages import language_name, shipped_languages
from newsletter.models import Frequency, SubscriberStatus
from newsletter.subscribers import attribution, links, preferences, sharing, time_zones
from newsletter.subscribers.data_rights import erase, export_data
from newsletter.subscribers.forms import EraseForm, PreferencesForm, UnsubscribeForm
from newsletter.subscribers.tokens import Purpose, TokenError
from newsletter.subscribers.views import bp, request_info
from newsletter.subscribers.wording import partner_wording
from newsletter.web import csrf, db, security
from newsletter.web.i18n import page_language, use_language


def _bad_link(exc: TokenError):
    if exc.gone:
        return render_template(
            "web/error.html",
            title=_("Nothing to see here"),
            message=_("We no longer hold anything for this address, so there is nothing to change."),
        ), 410
    return render_template(
        "web/error.html",
        title=_("This link does not work"),
        message=_(
            "It may have been cut short or changed when it was copied. Please open it again "
            "from the most recent email you got from us."
        ),
        offer_links=True,
    ), 400


def _preferences_form(subscriber) -> PreferencesForm:
    topics = preferences.topics_by_slug(db())
    partner_names = sharing.partner_names(db())
    prefs = preferences.current(subscriber)
    data = (
        None
        if request.method == "POST"
        else {
            "topics": sorted(prefs.topics),
            "frequency": prefs.frequency.value,
            "time_zone": prefs.time_zone,
            "first_name": prefs.first_name or "",
            "partners": sorted(prefs.partners),
            "language": subscriber.language or str(get_locale()),
        }
    )
    form = PreferencesForm(data=data)
    form.topics.choices = [SelectChoice(t.slug, t.name) for t in topics.values()]
    form.partners.choices = [SelectChoice(pid, name) for pid, name in partner_names.items()]
    common, others = time_zones.groups(subscriber.time_zone)
    form.time_zone.choices = {
        _("Common time zones"): [SelectChoice(z, time_zones.label(z)) for z in common],
        _("All other time zones"): [SelectChoice(z, time_zones.label(z)) for z in others],
    }
    form.language.choices = [SelectChoice(lang, language_name(lang)) for lang in shipped_languages()]
    return form


def _render_preferences(subscriber, form, token, saved=False, status=200):
    security.allow_own_scripts()  # the time zone's script (static/time-zone.js)
    return render_template(
        "web/preferences.html",
        form=form,
        token=token,
        subscriber=subscriber,
        saved=saved,
        topics=list(preferences.topics_by_slug(db()).values()),
        partners=sharing.partner_names(db()),
        partner_wording={
            pid: partner_wording(current_app.settings, name, page_language()).text
            for pid, name in sharing.partner_names(db()).items()
        },
        paused=preferences.is_paused(subscriber),
        unsubscribe_url=links.unsubscribe_url(current_app.settings, subscriber),
        # never chosen (still the default): the page's script starts from the browser's zone
        start_from_browser=request.method == "GET" and subscriber.time_zone == time_zones.DEFAULT,
    ), status


@bp.route("/preferences/<token>", methods=["GET", "POST"])
def preferences_page(token: str):
    try:
        subscriber, _ = links.read_link(db(), current_app.settings, Purpose.PREFERENCES, token)
    except TokenError as exc:
        return _bad_link(exc)
    use_language(subscriber.language)
    form = _preferences_form(subscriber)
    if request.method == "GET":
        return _render_preferences(subscriber, form, token)
    if not form.validate_on_submit():
        return _render_preferences(subscriber, form, token, status=400)
    wanted = preferences.Preferences(
        topics=set(form.topics.data or []),
        frequency=Frequency(form.frequency.data),
        pause_weeks=0 if form.resume.data else (int(form.pause.data) if form.pause.data else None),
        time_zone=form.time_zone.data,
        first_name=(form.first_name.data or "").strip() or None,
        partners=set(form.partners.data or []),
        language=form.language.data if form.language.data in shipped_languages() else None,
    )
    preferences.update(
        db(),
        subscriber,
        wanted,
        request_info("web:preferences"),
        sharing.partner_names(db()),
        wording_of=partial(partner_wording, current_app.settings, language=page_language()),
    )
    db().commit()
    use_language(subscriber.language)
    refresh()  # the page that answers is in the language just chosen
    return _render_preferences(subscriber, _preferences_form(subscriber), token, saved=True)


@bp.get("/preferences/<token>/data.json")
def download_data(token: str):
    """GET is safe here: it reads, it changes nothing."""
    try:
        subscriber, _ = links.read_link(db(), current_app.settings, Purpose.PREFERENCES, token)
    except TokenError as exc:
        return _bad_link(exc)
    body = json.dumps(export_data(db(), subscriber), indent=2, ensure_ascii=False)
    return Response(
        body,
        mimetype="application/json",
        headers={"Content-Disposition": 'attachment; filename="my-data.json"', "Cache-Control": "no-store"},
    )


@bp.route("/preferences/<token>/erase", methods=["GET", "POST"])
def erase_page(token: str):
    try:
        subscriber, _ = links.read_link(db(), current_app.settings, Purpose.PREFERENCES, token)
    except TokenError as exc:
        return _bad_link(exc)
    use_language(subscriber.language)
    form = EraseForm()
    if request.method == "POST" and form.validate_on_submit():
        erase(db(), subscriber, request_info("web:erase"))
        db().commit()
        return render_template("web/erased.html")
    return render_template("web/erase.html", form=form, token=token)


@bp.get("/unsubscribe/<token>")
def unsubscribe_page(token: str):
    """One button and a choice of scope; the GET itself changes nothing (link scanners)."""
    try:
        subscriber, payload = links.read_link(db(), current_app.settings, Purpose.UNSUBSCRIBE, token)
    except TokenError as exc:
        if exc.gone:
            return render_template("web/unsubscribed.html", topic=None), 200
        return _bad_link(exc)
    use_language(subscriber.language)
    topic = preferences.topics_by_slug(db()).get(payload.get("t") or "")
    form = UnsubscribeForm(scope="topic" if topic else "everything")
    done = subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.ERASED)
    return render_template(
        "web/unsubscribe.html",
        form=form,
        token=token,
        topic=topic,
        done=done,
        preferences_url=links.preferences_url(current_app.settings, subscriber),
    )


@bp.post("/unsubscribe/<token>")
@csrf.exempt
def unsubscribe(token: str):
    """RFC 8058 one-click (``List-Unsubscribe=One-Click``) and the page's button.

    No CSRF token or cookie is needed: the signed token is the authority, and the worst a
    forged POST can do is what the link's owner can do anyway. Always 200, never a redirect.
    """
    try:
        subscriber, payload = links.read_link(db(), current_app.settings, Purpose.UNSUBSCRIBE, token)
    except TokenError as exc:
        if exc.gone:
            return render_template("web/unsubscribed.html", topic=None), 200
        return _bad_link(exc)
    use_language(subscriber.language)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    topic = preferences.topics_by_slug(db()).get(payload.get("t") or "")
    # One-click leaves everything: a mailbox's "unsubscribe" button means "stop writing to me".
    scoped = topic if (not one_click and topic and request.form.get("scope") == "topic") else None
    source = "rfc8058:one-click" if one_click else "web:unsubscribe"
    changed = preferences.unsubscribe(
        db(), subscriber, request_info(source), topic=scoped.slug if scoped else None
    )
    if changed and isinstance(payload.get("c"), int):  # the link of a campaign's email
        attribution.count_unsubscribe(db(), subscriber, payload["c"], how=source)
    db().commit()
    return render_template(
        "web/unsubscribed.html",
        topic=scoped,
        preferences_url=links.preferences_url(current_app.settings, subscriber),
    ), 200
