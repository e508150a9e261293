"""The one parser: every sample report becomes the right signal (or none), bad input a one-line refusal."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.core.config import Settings
from newsletter.feedback.parse import MAX_SIZE, classify, parse
from newsletter.mail import verp
from newsletter.models import SignalKind
from tests.feedback_helpers import SAMPLES, sample

SETTINGS = Settings(secret_key="k" * 32, bounce_address="bounces@store.example")
VERP = verp.return_path(SETTINGS, verp.DELIVERY, 4242)
REF = verp.VerpRef(verp.DELIVERY, 4242)
MESSAGE_ID = "<20261201.abc123@store.example>"

HARD, SOFT, COMPLAINT = SignalKind.BOUNCE_HARD, SignalKind.BOUNCE_SOFT, SignalKind.COMPLAINT
#: file -> (what the report is, the signal's kind, its status code)
EXPECTED = {
    "postfix-user-unknown.eml": ("bounce", HARD, "5.1.1"),
    "postfix-spam-block.eml": ("bounce", SOFT, "5.7.1"),
    "postfix-delayed.eml": ("delayed", None, None),
    "gmail-user-unknown.eml": ("bounce", HARD, "5.1.1"),
    "gmail-over-quota.eml": ("bounce", SOFT, "5.2.2"),
    "exchange-recipient-not-found.eml": ("bounce", HARD, "5.1.10"),
    "exim-user-unknown.eml": ("bounce", HARD, "5.1.1"),
    "qmail-no-mailbox.eml": ("bounce", HARD, "5.1.1"),
    "arf-rfc5965.eml": ("complaint", COMPLAINT, None),
    "arf-yahoo.eml": ("complaint", COMPLAINT, None),
    "arf-outlook.eml": ("complaint", COMPLAINT, None),
    "out-of-office-exchange.eml": ("auto-reply", None, None),
    "vacation-autoreply.eml": ("auto-reply", None, None),
}


def report(name: str, verp_address: str = VERP, message_id: str = MESSAGE_ID) -> bytes:
    return sample(name, verp_address=verp_address, recipient="ann@example.com", message_id=message_id)


def test_every_sample_file_is_listed_with_its_source():
    files = {p.name for p in SAMPLES.glob("*.eml")}
    readme = (SAMPLES / "README.md").read_text()
    assert files == set(EXPECTED)
    assert all(f"| {name} |" in readme for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("way", ["smtp", "import"])
def test_each_sample_gives_its_signal_naming_the_verp_row(name, way):
    what, kind, code = EXPECTED[name]
    envelope = (
        [VERP] if way == "smtp" else []
    )  # an import reads Delivered-To/X-Original-To/To (or the original)
    done = parse(report(name), SETTINGS, source=way, envelope_to=envelope)
    assert done.what == what, done.reason
    if kind is None:
        assert done.signals == ()
        return
    [signal] = done.signals
    assert (signal.kind, signal.status_code, signal.verp, signal.source) == (kind, code, REF, way)
    assert signal.provider_event_id and signal.provider_event_id.startswith("<")  # the report's own id
    if kind != COMPLAINT:
        assert signal.recipient == "ann@example.com" and code in signal.diagnostic
    else:
        assert signal.recipient is None  # Original-Rcpt-To is never used


@pytest.mark.parametrize(
    "name", ["postfix-user-unknown.eml", "gmail-user-unknown.eml", "exim-user-unknown.eml"]
)
def test_without_a_verp_tag_the_original_message_id_names_the_row(name):
    plain = report(name, verp_address="bounces@store.example")
    [signal] = parse(plain, SETTINGS, envelope_to=["bounces@store.example"]).signals
    assert signal.verp is None and signal.message_id == MESSAGE_ID


@pytest.mark.parametrize("name", ["postfix-user-unknown.eml", "arf-rfc5965.eml", "exim-user-unknown.eml"])
def test_a_tag_that_does_not_verify_is_ignored_with_no_fallback(name):
    forged = VERP.replace(VERP.split("-")[-1].split("@")[0], "a" * 16)
    done = parse(report(name, verp_address=forged), SETTINGS, source="import")
    assert done.signals == () and "does not verify" in done.reason
    other_key = Settings(secret_key="x" * 32, bounce_address="bounces@store.example")
    assert parse(report(name), other_key, envelope_to=[VERP]).signals == ()


def test_a_complaint_is_named_by_the_included_return_path_not_by_the_fbl_address():
    done = parse(report("arf-yahoo.eml"), SETTINGS, envelope_to=["bounces@store.example"])
    assert done.signals[0].verp == REF


TRUNCATED = report("postfix-user-unknown.eml")[:-200]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty message"),
        (b"\xff\xfe\x00garbage\x80\x81" * 50, "not an email message"),
        (TRUNCATED, "truncated"),
        (b"Subject: x\r\n" + b"a" * (MAX_SIZE + 1), "too large"),
        (b"Subject: no sender\r\nX-Failed-Recipients: a@example.com\r\n\r\n550 5.1.1", "no From header"),
        (b"From: shop@example.com\r\nSubject: hello\r\n\r\nJust a question about my order.", "not a bounce"),
        (
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n\xc3\x28\xa0\xa1 ###\r\n--b--\r\n",
            "without a per-recipient block",
        ),
        (
            "From: MAILER-DAEMON@mx.example.org\r\nContent-Type: text/plain; charset=x-unknown-8\r\n"
            "X-Failed-Recipients: ann@example.com\r\n\r\n"
            "550 5.1.1 Ã¼ñknown\r\n".encode("latin-1"),
            "names no message",
        ),
    ],
)
def test_bad_input_is_a_one_line_refusal_and_no_signal(raw, reason, caplog):
    caplog.set_level(logging.DEBUG)
    done = parse(raw, SETTINGS, envelope_to=["bounces@store.example"])
    assert done.signals == () and reason in done.reason and "\n" not in done.reason
    assert not [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]  # no traceback


def test_a_report_that_is_not_a_failure_is_no_signal():
    delivered = report("postfix-user-unknown.eml").replace(b"Action: failed", b"Action: delivered")
    done = parse(delivered, SETTINGS, envelope_to=[VERP])
    assert done.signals == () and "no failure" in done.reason
    not_spam = report("arf-rfc5965.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse(not_spam, SETTINGS, envelope_to=[VERP]).signals == ()


@pytest.mark.parametrize(
    "code, diagnostic, kind",
    [
        ("5.1.1", "550 5.1.1 user unknown", HARD),
        ("5.1.10", "RecipientNotFound", HARD),
        ("5.4.1", "550 5.4.1 Recipient address rejected: Access denied", HARD),
        ("5.2.2", "552 5.2.2 mailbox full", SOFT),
        ("5.7.1", "550 5.7.1 message rejected as spam", SOFT),
        ("5.7.1", "554 5.7.1 <a@x>: Recipient address rejected: user unknown", HARD),
        ("5.3.4", "552 5.3.4 message too big", SOFT),
        ("4.4.1", "connection refused", SOFT),
        ("550", "550 no such user", HARD),
        ("552", "552 over quota", SOFT),
        (None, "", HARD),
    ],
)
def test_classify_keeps_hard_for_the_address_and_soft_for_the_rest(code, diagnostic, kind):
    assert classify(code, diagnostic) == kind


SOURCES = [report(name) for name in sorted(EXPECTED)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SOURCES),
    st.integers(min_value=0, max_value=6000),
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=6000),
)
def test_cut_or_corrupted_reports_never_raise_and_refuse_in_one_line(raw, cut, junk, at):
    """Any sample cut short or with bytes spliced in: a Report, never an exception."""
    broken = raw[:cut] if cut < len(raw) else raw[:at] + junk + raw[at:]
    done = parse(broken, SETTINGS, envelope_to=[VERP])
    assert "\n" not in done.reason
    assert all(s.verp == REF for s in done.signals)  # whatever survives names only the signed row
