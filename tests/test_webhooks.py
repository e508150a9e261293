"""Provider webhooks: SES through SNS (signature with our own certificate) and Mailgun (HMAC).

The SNS envelopes are signed exactly as AWS documents it, with a key and a self-signed
certificate made here; the certificate is placed in SNS_CERT_DIR under the name its URL maps to.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from newsletter.campaigns import scheduling
from newsletter.core import clock
from newsletter.feedback import sns
from newsletter.feedback.webhooks import FETCH_KEY
from newsletter.mail import verp
from newsletter.models import (
    ConsentAction,
    ConsentEvent,
    Delivery,
    DeliveryEvent,
    SignalKind,
    Suppression,
    SuppressionReason,
)
from tests.sending_helpers import now_floor, run_engine, write_campaign

DATA = Path(__file__).parent / "data" / "webhooks"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-feedback"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
MAILGUN_KEY = "key-" + "0123456789abcdef" * 2


def _make_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


KEY, CERT_PEM = _make_cert()
OTHER_KEY, _ = _make_cert()


def sns_envelope(message: str, *, kind="Notification", version="2", key=KEY, at=None, **fields) -> dict:
    """An SNS message signed as AWS documents it: the canonical fields, SHA1/SHA256 with RSA."""
    envelope = {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": (at or clock.now()).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **fields,
    }
    if kind == "Notification":
        envelope.setdefault("Subject", "Amazon SES Email Event Notification")
        envelope["UnsubscribeURL"] = "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1"
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns.canonical(envelope), padding.PKCS1v15(), digest)
    envelope["Signature"] = base64.b64encode(signature).decode()
    return envelope


def ses_event(name: str, source: str, message_id: str = "<none@x>") -> str:
    text = (DATA / name).read_text("utf-8")
    return text.replace("VERP_SOURCE", source).replace("MESSAGE_ID", message_id)


def mailgun_body(name: str, source: str, message_id: str, *, key=MAILGUN_KEY, at=None, token=None) -> dict:
    body = json.loads(
        (DATA / name).read_text("utf-8").replace("VERP_SOURCE", source).replace("MESSAGE_ID", message_id)
    )
    timestamp = str(int((at or clock.now()).replace(tzinfo=UTC).timestamp()))
    token = token or secrets.token_hex(25)
    mac = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    body["signature"] = {"timestamp": timestamp, "token": token, "signature": mac}
    return body


@pytest.fixture
def sent(make_app, make_subscriber, smtp_sink, work, tmp_path):
    """A campaign really sent to two people: (app, {address: (VERP sender, delivery)})."""
    cert_dir = tmp_path / "sns-certs"
    cert_dir.mkdir()
    sns.cert_path(cert_dir, CERT_URL).write_bytes(CERT_PEM)
    app = make_app(
        BOUNCE_ADDRESS="bounces@store.example",
        MARKETING_CAPS="",
        QUIET_HOURS="",
        SNS_TOPIC_ARNS=TOPIC,
        SNS_CERT_DIR=str(cert_dir),
        MAILGUN_SIGNING_KEY=MAILGUN_KEY,
    )
    sns._certs.clear()  # the in-memory cache: each test's certificate comes from its own folder
    runtime = app.extensions["newsletter"]
    for address in ("ann@example.com", "bob@example.com"):
        make_subscriber(address, topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    rows = {}
    with runtime.sessions() as session:
        for sender, rcpts, _message in smtp_sink.take_envelopes():
            rows[rcpts[0]] = (sender, session.get(Delivery, verp.read(runtime.settings, sender).row_id))
    assert len(rows) == 2
    return app, rows


def _state(app) -> tuple[int, int, int]:
    with app.extensions["newsletter"].sessions() as session:
        return (
            session.scalar(select(func.count(DeliveryEvent.id))),
            session.scalar(select(func.count(Suppression.id))),
            session.scalar(select(func.count(ConsentEvent.id))),
        )


def post(app, path, body, **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.test_client().post(path, data=data, content_type="text/plain; charset=UTF-8", **kwargs)


# --- SES through SNS ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_ses_hard_bounce_suppresses_and_lands_on_its_delivery(sent, version):
    app, rows = sent
    sender, delivery = rows["ann@example.com"]
    envelope = sns_envelope(ses_event("ses-bounce-notification.json", sender), version=version)
    answer = post(app, "/webhooks/ses", envelope)
    assert answer.status_code == 200 and answer.json["recorded"] == 1
    again = post(app, "/webhooks/ses", envelope)  # SNS delivers at least once
    assert again.status_code == 200 and again.json["duplicate"] == 1
    with app.extensions["newsletter"].sessions() as session:
        [event] = session.scalars(select(DeliveryEvent))
        row = session.get(Delivery, delivery.id)
        entry = session.scalar(select(Suppression))
    assert (event.delivery_id, event.kind, event.status_code) == (
        delivery.id,
        SignalKind.BOUNCE_HARD,
        "5.1.1",
    )
    assert event.provider_event_id == envelope["MessageId"] and event.source == "webhook:ses"
    assert "550 5.1.1 user unknown" in event.diagnostic
    assert row.bounce_kind == "hard" and row.bounced_at is not None
    assert entry.reason == SuppressionReason.BOUNCED


def test_an_ses_complaint_event_found_by_message_id_suppresses_and_writes_the_ledger(sent):
    app, rows = sent
    _sender, delivery = rows["ann@example.com"]
    # No VERP source (SES's own MAIL FROM): the row is named by our Message-ID in the headers.
    event = json.loads(ses_event("ses-complaint-event.json", "news@store.example"))
    event["mail"]["headers"].append({"name": "Message-ID", "value": delivery.message_id})
    answer = post(app, "/webhooks/ses", sns_envelope(json.dumps(event)))
    assert answer.status_code == 200 and answer.json["recorded"] == 1
    with app.extensions["newsletter"].sessions() as session:
        assert session.get(Delivery, delivery.id).complained_at is not None
        assert session.scalar(select(Suppression.reason)) == SuppressionReason.COMPLAINED
        [ledger] = session.scalars(
            select(ConsentEvent).where(ConsentEvent.action == ConsentAction.COMPLAINED)
        )
        assert ledger.subscriber_id == delivery.subscriber_id
        assert "abuse" in session.scalar(select(DeliveryEvent.diagnostic))


def test_an_ses_event_naming_no_message_of_ours_is_acknowledged_and_changes_nothing(sent):
    app, _rows = sent
    before = _state(app)
    answer = post(
        app, "/webhooks/ses", sns_envelope(ses_event("ses-bounce-notification.json", "x@y.example"))
    )
    assert answer.status_code == 200 and answer.json["unmatched"] == 1
    assert _state(app) == before


def _refused(app, body, status, words, path="/webhooks/ses"):
    before = _state(app)
    answer = post(app, path, body)
    assert answer.status_code == status, answer.json
    assert words in answer.json["message"]
    assert _state(app) == before


def test_forged_sns_messages_are_refused_and_change_nothing(sent):
    app, rows = sent
    sender, _delivery = rows["ann@example.com"]
    message = ses_event("ses-bounce-notification.json", sender)
    _refused(app, sns_envelope(message, key=OTHER_KEY), 403, "bad signature")
    tampered = sns_envelope(message)
    tampered["Message"] = tampered["Message"].replace("Permanent", "Transient")
    _refused(app, tampered, 403, "bad signature")
    # The classic hole: a certificate of the forger's own, on the forger's host.
    for url in (
        "https://attacker.example/cert.pem",
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.attacker.example/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
    ):
        _refused(app, sns_envelope(message, key=OTHER_KEY, SigningCertURL=url), 403, "SigningCertURL")
    _refused(app, sns_envelope(message, TopicArn="arn:aws:sns:us-east-1:999:other"), 403, "TopicArn")
    stale = sns_envelope(message, at=clock.now() - timedelta(hours=2))
    _refused(app, stale, 403, "Timestamp")
    _refused(app, sns_envelope(message, version="3"), 400, "SignatureVersion")


def test_malformed_sns_bodies_get_a_one_line_400_and_change_nothing(sent):
    app, rows = sent
    sender, _delivery = rows["ann@example.com"]
    good = sns_envelope(ses_event("ses-bounce-notification.json", sender))
    text = json.dumps(good).encode()
    _refused(app, text[: len(text) // 2], 400, "not JSON")
    _refused(app, json.dumps(good, ensure_ascii=False).encode("utf-16"), 400, "not UTF-8")
    _refused(app, b"x" * (300 * 1024), 413, "larger than")
    _refused(app, b"[1, 2]", 400, "not an SNS message")
    missing = dict(good)
    del missing["MessageId"]
    _refused(app, missing, 400, "MessageId is missing")
    event = json.loads(good["Message"])
    del event["bounce"]["bouncedRecipients"]
    _refused(app, sns_envelope(json.dumps(event)), 400, "bouncedRecipients")
    _refused(app, sns_envelope("not json {"), 400, "Message is not JSON")


def test_a_subscription_confirmation_is_verified_then_confirmed_on_aws_only(sent):
    app, _rows = sent
    fetched = []
    app.extensions[FETCH_KEY] = lambda url: fetched.append(url) or b"<ConfirmSubscriptionResponse/>"
    subscribe = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=t"
    confirmation = sns_envelope(
        "You have chosen to subscribe to the topic.",
        kind="SubscriptionConfirmation",
        Token="t",
        SubscribeURL=subscribe,
    )
    answer = post(app, "/webhooks/ses", confirmation)
    assert answer.status_code == 200 and "confirmed" in answer.json["message"] and fetched == [subscribe]
    elsewhere = sns_envelope(
        "x", kind="SubscriptionConfirmation", Token="t", SubscribeURL="https://evil.example/"
    )
    assert post(app, "/webhooks/ses", elsewhere).status_code == 403 and fetched == [subscribe]

    def unreachable(url):
        raise OSError("network is unreachable")

    app.extensions[FETCH_KEY] = unreachable
    answer = post(
        app,
        "/webhooks/ses",
        sns_envelope("x", kind="SubscriptionConfirmation", Token="t", SubscribeURL=subscribe),
    )
    assert answer.status_code == 502 and "by hand" in answer.json["message"]


def test_a_certificate_not_in_the_folder_is_fetched_from_aws_once_and_cached(sent, tmp_path):
    app, rows = sent
    sender, _delivery = rows["bob@example.com"]
    url = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1111.pem"
    fetched = []
    app.extensions[FETCH_KEY] = lambda u: fetched.append(u) or CERT_PEM
    for _ in range(2):
        answer = post(
            app,
            "/webhooks/ses",
            sns_envelope(ses_event("ses-bounce-notification.json", sender), SigningCertURL=url),
        )
        assert answer.status_code == 200
    assert fetched == [url]
    assert sns.cert_path(Path(app.settings.sns_cert_dir), url).read_bytes() == CERT_PEM


def test_the_webhooks_are_off_without_their_settings(make_app):
    app = make_app()
    assert post(app, "/webhooks/ses", {}).status_code == 404
    assert post(app, "/webhooks/mailgun", {}).status_code == 404


# --- Mailgun -----------------------------------------------------------------------------------


def test_a_mailgun_permanent_failure_suppresses_and_a_replay_is_refused(sent):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    body = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    answer = post(app, "/webhooks/mailgun", body)
    assert answer.status_code == 200 and answer.json["recorded"] == 1
    _refused(app, body, 403, "token was used already", path="/webhooks/mailgun")
    # The same event signed anew (Mailgun's retry): the event id makes it a no-op.
    fresh = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    assert post(app, "/webhooks/mailgun", fresh).json["duplicate"] == 1
    with app.extensions["newsletter"].sessions() as session:
        [event] = session.scalars(select(DeliveryEvent))
        assert (event.delivery_id, event.kind, event.status_code) == (
            delivery.id,
            SignalKind.BOUNCE_HARD,
            "550",
        )
        assert event.provider_event_id == "G9Bn5sl1TC6nu79C8C0bwg" and "No Such User Here" in event.diagnostic
        assert session.scalar(select(Suppression.reason)) == SuppressionReason.BOUNCED
        assert session.get(Delivery, delivery.id).bounce_kind == "hard"


def test_a_mailgun_complaint_is_found_by_its_bracketless_message_id(sent):
    app, rows = sent
    _sender, delivery = rows["bob@example.com"]
    body = mailgun_body("mailgun-complained.json", "", delivery.message_id.strip("<>"))
    answer = post(app, "/webhooks/mailgun", body)
    assert answer.status_code == 200 and answer.json["recorded"] == 1
    with app.extensions["newsletter"].sessions() as session:
        assert session.get(Delivery, delivery.id).complained_at is not None
        assert session.scalar(select(Suppression.reason)) == SuppressionReason.COMPLAINED
        assert (
            session.scalar(
                select(func.count(ConsentEvent.id)).where(ConsentEvent.action == ConsentAction.COMPLAINED)
            )
            == 1
        )


def test_a_mailgun_temporary_failure_is_a_soft_bounce(sent):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    body = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    body["event-data"]["severity"] = "temporary"
    body["event-data"]["delivery-status"]["code"] = 452
    assert post(app, "/webhooks/mailgun", body).status_code == 200
    with app.extensions["newsletter"].sessions() as session:
        assert session.get(Delivery, delivery.id).bounce_kind == "soft"
        assert session.scalar(select(func.count(Suppression.id))) == 0


def test_forged_stale_and_malformed_mailgun_requests_are_refused(sent):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    path = "/webhooks/mailgun"
    forged = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id, key="x" * 32)
    _refused(app, forged, 403, "bad signature", path=path)
    stale = mailgun_body(
        "mailgun-failed-permanent.json", sender, delivery.message_id, at=clock.now() - timedelta(hours=1)
    )
    _refused(app, stale, 403, "timestamp", path=path)
    # The signed parts are fine but the event was changed: the HMAC covers only timestamp+token,
    # so the body's content is believed only as far as VERP and our Message-ID name our rows.
    good = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    text = json.dumps(good).encode()
    _refused(app, text[:-10], 400, "not JSON", path=path)
    _refused(app, b"\xff\xfe" + text, 400, "not UTF-8", path=path)
    _refused(app, b" " * (300 * 1024), 413, "larger than", path=path)
    no_sig = copy.deepcopy(good)
    del no_sig["signature"]["token"]
    _refused(app, no_sig, 400, "signature.token", path=path)
    no_id = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    del no_id["event-data"]["id"]
    _refused(app, no_id, 400, "event-data.id", path=path)


def test_a_mailgun_event_we_do_not_act_on_is_acknowledged(sent):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    body = mailgun_body("mailgun-complained.json", sender, delivery.message_id)
    body["event-data"]["event"] = "opened"
    answer = post(app, "/webhooks/mailgun", body)
    assert answer.status_code == 200 and answer.json["message"] == "nothing to record"


def test_nested_brackets_and_odd_urls_get_a_400_or_403_not_a_500(sent):
    app, rows = sent
    sender, _delivery = rows["ann@example.com"]
    _refused(app, b"[" * 200_000, 400, "not JSON")
    _refused(app, b"[" * 200_000, 400, "not JSON", path="/webhooks/mailgun")
    message = ses_event("ses-bounce-notification.json", sender)
    for url in ("https://[sns.us-east-1.amazonaws.com/x", "https://sns.us-east-1.amazonaws.com:x/"):
        _refused(app, sns_envelope(message, SigningCertURL=url), 403, "SigningCertURL")


def test_without_redis_mailgun_tokens_are_not_remembered_but_event_ids_still_are(sent, make_app):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    no_redis = make_app(
        BOUNCE_ADDRESS="bounces@store.example",
        MAILGUN_SIGNING_KEY=MAILGUN_KEY,
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    body = mailgun_body("mailgun-failed-permanent.json", sender, delivery.message_id)
    assert post(no_redis, "/webhooks/mailgun", body).json["recorded"] == 1
    replay = post(no_redis, "/webhooks/mailgun", body)  # the token cannot be checked: the id can
    assert replay.status_code == 200 and replay.json["duplicate"] == 1
    assert _state(app)[0] == 1


def test_an_undetermined_bounce_is_soft_and_a_published_delivery_is_informational(sent):
    app, rows = sent
    sender, delivery = rows["ann@example.com"]
    bounce = json.loads(ses_event("ses-bounce-notification.json", sender))
    bounce["bounce"]["bounceType"] = "Undetermined"
    assert post(app, "/webhooks/ses", sns_envelope(json.dumps(bounce))).json["recorded"] == 1
    published = {
        "eventType": "Delivery",
        "mail": bounce["mail"],
        "delivery": {"recipients": ["ann@example.com"], "smtpResponse": "250 2.6.0 Message received"},
    }
    assert post(app, "/webhooks/ses", sns_envelope(json.dumps(published))).json["recorded"] == 1
    ignored = {"eventType": "Open", "mail": bounce["mail"], "open": {}}
    assert (
        post(app, "/webhooks/ses", sns_envelope(json.dumps(ignored))).json["message"] == "nothing to record"
    )
    with app.extensions["newsletter"].sessions() as session:
        kinds = session.scalars(select(DeliveryEvent.kind).order_by(DeliveryEvent.id)).all()
        assert kinds == [SignalKind.BOUNCE_SOFT, SignalKind.DELIVERED]
        assert session.get(Delivery, delivery.id).bounce_kind == "soft"
        assert session.scalar(select(func.count(Suppression.id))) == 0


def test_control_characters_in_provider_fields_are_cleaned_not_a_database_error(sent):
    app, rows = sent
    sender, delivery = rows["bob@example.com"]
    body = mailgun_body("mailgun-failed-permanent.json", "", "unused")
    body["event-data"]["message"]["headers"]["message-id"] = delivery.message_id.strip("<>") + "\x00"
    body["event-data"]["recipient"] = "bob@example.com\x00"
    body["event-data"]["delivery-status"]["message"] = "No\x00 Such User"
    answer = post(app, "/webhooks/mailgun", body)
    assert answer.status_code == 200 and answer.json["recorded"] == 1
    with app.extensions["newsletter"].sessions() as session:
        assert "No  Such User" in session.scalar(select(DeliveryEvent.diagnostic))
