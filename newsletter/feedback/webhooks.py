"""Provider webhooks: ``POST /webhooks/ses`` (through SNS) and ``POST /webhooks/mailgun``.

Machine to machine: no cookies, so no CSRF; each request proves itself by its signature. One
transaction per request: every signal it carries is recorded, or none. A duplicate or an event
naming no message of ours is still a 200 (the body says so), so the provider stops resending.
"""

from __future__ import annotations

import logging
from datetime import UTC
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from newsletter.core import clock
from newsletter.feedback import mailgun, ses, sns
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.web import db, runtime
from newsletter.web.api import BadJson, json_body

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
MAX_BODY = 256 * 1024  #: SNS messages are at most 256 KB; Mailgun events are far smaller
#: tests replace it (AWS is not reachable from them): ``fetch(url) -> bytes``
FETCH_KEY = "newsletter.sns_fetch"


def _answer(message: str, status: int = 200, **extra):
    return jsonify(status="ok" if status == 200 else "refused", message=message, **extra), status


def _json_body():
    """The body as JSON, or a (message, status) refusal: too big, not UTF-8, not JSON."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        return None, (f"the body is larger than {MAX_BODY // 1024} KB", 413)
    data = request.stream.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        return None, (f"the body is larger than {MAX_BODY // 1024} KB", 413)
    try:
        return json_body(data.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, ("the body is not UTF-8", 400)
    except BadJson:  # not JSON, or a body of nested brackets
        return None, ("the body is not JSON", 400)


def _record_all(signals: list[Signal]) -> tuple[str, int, dict]:
    """Record the signals in one transaction; the answer's message, status and counts."""
    settings = current_app.settings
    session = db()
    counts = {"recorded": 0, "duplicate": 0, "unmatched": 0}
    try:
        for signal in signals:
            done = record(session, settings, signal)
            counts["duplicate" if done.duplicate else "unmatched" if done.unmatched else "recorded"] += 1
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.exception("webhook not recorded")
        return "the database is unavailable; nothing was recorded, send it again", 503, {}
    parts = [f"{n} {what}" for what, n in counts.items() if n]
    return ", ".join(parts) or "nothing to record", 200, counts


@bp.post("/ses")
def ses_webhook():
    """An SNS message carrying an SES notification, or a subscription (un)confirmation."""
    settings = current_app.settings
    if not settings.sns_topic_arns:
        return _answer("this webhook is off (NEWSLETTER_SNS_TOPIC_ARNS is empty)", 404)
    body, refusal = _json_body()
    if refusal:
        return _answer(*refusal)
    cert_dir = Path(settings.sns_cert_dir or Path(current_app.instance_path) / "sns-certs")
    fetch = current_app.extensions.get(FETCH_KEY, sns.fetch_https)
    try:
        message = sns.verify(body, settings.sns_topic_arns, cert_dir, clock.now(), fetch)
        if message["Type"] == "SubscriptionConfirmation":
            sns.confirm_subscription(message, fetch)
            return _answer("subscription confirmed")
        if message["Type"] == "UnsubscribeConfirmation":
            log.warning("SNS topic %s unsubscribed this endpoint", message["TopicArn"])
            return _answer("unsubscribe noted")
    except sns.Refused as exc:
        return _answer(str(exc), exc.status)
    try:
        event = json_body(message["Message"])
        signals = ses.signals(settings, event, message["MessageId"])
    except ValueError:  # BadJson, or a value in the event that does not parse
        return _answer("Message is not JSON", 400)
    except ses.Malformed as exc:
        return _answer(str(exc), 400)
    text, status, counts = _record_all(signals)
    return _answer(text, status, **counts)


@bp.post("/mailgun")
def mailgun_webhook():
    """One Mailgun event (failed, complained, delivered; others are acknowledged and ignored)."""
    settings = current_app.settings
    if not settings.mailgun_signing_key:
        return _answer("this webhook is off (NEWSLETTER_MAILGUN_SIGNING_KEY is empty)", 404)
    body, refusal = _json_body()
    if refusal:
        return _answer(*refusal)
    try:
        sig = mailgun.verify(
            settings.mailgun_signing_key, body, now=clock.now().replace(tzinfo=UTC).timestamp()
        )
        signal = mailgun.signal(settings, body["event-data"])
    except mailgun.Refused as exc:
        return _answer(str(exc), exc.status)
    conn = runtime().redis
    token = str(sig["token"])
    if mailgun.claim_token(conn, token) is False:
        return _answer("replayed request: this token was used already", 403)
    text, status, counts = _record_all([signal] if signal else [])
    if status != 200:
        mailgun.release_token(conn, token)  # Mailgun retries; the retry must not look like a replay
    return _answer(text, status, **counts)
