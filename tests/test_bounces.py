"""Bounces and complaints through the SMTP receiver and mailbox imports reach their delivery row."""

from __future__ import annotations

import mailbox
import os
import signal
import smtplib
import socket
import subprocess
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.core.runtime import Runtime
from newsletter.feedback.server import make_server
from newsletter.models import Delivery, DeliveryEvent, SignalKind, Suppression, SuppressionReason
from tests.conftest import _free_port
from tests.feedback_helpers import send_campaign, wait_for
from tests.test_cli import NEWSLETTER, env_for


@pytest.fixture
def sent(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(BOUNCE_ADDRESS="bounces@store.example", MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    deliveries = send_campaign(
        runtime, make_subscriber, smtp_sink, work, tmp_path, ["ann@example.com", "bob@example.com"]
    )
    return app, runtime, deliveries


@pytest.fixture
def receiver(sent):
    """``bounces serve``'s receiver on a free loopback port, on the test's database."""
    _app, runtime, _deliveries = sent
    server = make_server(runtime, "127.0.0.1", _free_port())
    server.start()
    yield server
    server.stop()


def send(server, rcpt: str, raw: bytes, mail_from: str = "") -> None:
    with smtplib.SMTP(server.hostname, server.port) as smtp:
        smtp.sendmail(mail_from, [rcpt], raw)


def counts(runtime):
    with runtime.sessions() as session:
        return (
            session.scalar(select(func.count(DeliveryEvent.id))),
            session.scalar(select(func.count(Suppression.id))),
        )


def test_a_dsn_sent_to_the_verp_address_suppresses_its_recipient(sent, receiver):
    _app, runtime, deliveries = sent
    ann = deliveries["ann@example.com"]
    send(receiver, ann.verp_address, ann.report("postfix-user-unknown.eml"))

    def bounced():
        with runtime.sessions() as session:
            return session.scalar(
                select(Delivery).where(Delivery.id == ann.ref.row_id, Delivery.bounce_kind.is_not(None))
            )

    delivery = wait_for(bounced, what="the delivery's bounce")
    assert delivery.bounce_kind == "hard" and delivery.bounced_at is not None
    send(receiver, ann.verp_address, ann.report("postfix-user-unknown.eml"))  # the MTA delivers it again
    with runtime.sessions() as session:
        [event] = session.scalars(select(DeliveryEvent))
        entry = session.scalar(select(Suppression))
    assert (event.kind, event.status_code, event.source) == (SignalKind.BOUNCE_HARD, "5.1.1", "smtp")
    assert "User unknown" in event.diagnostic
    assert entry.reason == SuppressionReason.BOUNCED and entry.source == "smtp:5.1.1"


def test_an_arf_report_to_the_bare_bounce_address_is_a_complaint(sent, receiver):
    _app, runtime, deliveries = sent
    bob = deliveries["bob@example.com"]
    send(receiver, "bounces@store.example", bob.report("arf-yahoo.eml"), "feedback@arf.mail.yahoo.com")
    with runtime.sessions() as session:  # the 250 came after the commit
        delivery = session.get(Delivery, bob.ref.row_id)
        assert delivery.complained_at is not None
        assert session.scalar(select(Suppression.reason)) == SuppressionReason.COMPLAINED


def test_the_receiver_refuses_other_addresses_and_bad_reports_and_ignores_forged_ones(sent, receiver):
    _app, runtime, deliveries = sent
    ann = deliveries["ann@example.com"]
    with smtplib.SMTP(receiver.hostname, receiver.port) as smtp:
        smtp.ehlo()
        smtp.mail("")
        assert smtp.rcpt("postmaster@store.example")[0] == 550
        assert smtp.rcpt("bounces+x@elsewhere.example")[0] == 550
        assert smtp.rcpt(ann.verp_address)[0] == 250
        assert smtp.data(ann.report("postfix-user-unknown.eml")[:-200])[0] == 550  # truncated
    forged = ann.verp_address.replace(ann.verp_address.split("-")[-1].split("@")[0], "a" * 16)
    send(receiver, forged, ann.report("postfix-user-unknown.eml", verp_address=forged))  # 250, ignored
    send(receiver, ann.verp_address, ann.report("out-of-office-exchange.eml"))
    send(receiver, ann.verp_address, ann.report("postfix-delayed.eml"))
    with pytest.raises(smtplib.SMTPSenderRefused) as huge:  # SIZE announced: refused before the data
        send(receiver, ann.verp_address, b"Subject: x\r\n\r\n" + b"a" * (11 * 1024 * 1024))
    assert huge.value.smtp_code == 552
    assert counts(runtime) == (0, 0)


def test_the_receiver_answers_451_while_the_database_is_down(sent, tmp_path):
    _app, runtime, deliveries = sent
    ann = deliveries["ann@example.com"]
    broken = replace(runtime.settings, database_url=f"sqlite:///{tmp_path}/missing/dir/db.sqlite3")
    down = Runtime.from_settings(broken)
    server = make_server(down, "127.0.0.1", _free_port())
    server.start()
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(server, ann.verp_address, ann.report("postfix-user-unknown.eml"))
    finally:
        server.stop()
        down.engine.dispose()
    assert refused.value.smtp_code == 451
    assert counts(runtime) == (0, 0)


def test_import_of_an_mbox_and_a_maildir_records_each_report_once(sent, tmp_path):
    app, runtime, deliveries = sent
    ann, bob = deliveries["ann@example.com"], deliveries["bob@example.com"]
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for raw in (
        ann.report("exim-user-unknown.eml"),
        bob.report("arf-outlook.eml"),
        ann.report("vacation-autoreply.eml"),
        ann.report("gmail-over-quota.eml")[:-120],  # truncated
        b"not a message at all",
    ):
        box.add(raw)
    box.close()
    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    maildir.add(bob.report("gmail-over-quota.eml"))
    maildir.add(ann.report("exim-user-unknown.eml"))  # the same bounce again: a duplicate
    maildir.close()

    result = CliRunner().invoke(
        cli,
        ["bounces", "import", str(tmp_path / "bounces.mbox"), str(tmp_path / "Maildir")],
        env={**env_for(app), "NEWSLETTER_BOUNCE_ADDRESS": "bounces@store.example"},
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip().splitlines()[-1] == "3 recorded, 1 duplicate, 0 unmatched, 1 ignored, 2 refused"
    )
    assert "bounces.mbox#4: refused: truncated" in result.stderr
    assert "bounces.mbox#3: ignored: auto-reply" in result.stderr
    with runtime.sessions() as session:
        kinds = sorted(session.execute(select(DeliveryEvent.delivery_id, DeliveryEvent.kind)).all())
        assert kinds == sorted(
            [
                (ann.ref.row_id, SignalKind.BOUNCE_HARD),
                (bob.ref.row_id, SignalKind.COMPLAINT),
                (bob.ref.row_id, SignalKind.BOUNCE_SOFT),
            ]
        )
        assert session.get(Delivery, bob.ref.row_id).complained_at is not None
        assert session.get(Delivery, bob.ref.row_id).bounce_kind == "soft"
        reasons = sorted(r.value for r in session.scalars(select(Suppression.reason)))
        assert reasons == ["bounced", "complained"]


def test_import_of_eml_files_refuses_a_huge_one_without_reading_it_whole(sent, tmp_path):
    app, runtime, deliveries = sent
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "a.eml").write_bytes(deliveries["ann@example.com"].report("qmail-no-mailbox.eml"))
    (folder / "huge.eml").write_bytes(b"Subject: x\r\n\r\n" + b"a" * (11 * 1024 * 1024))
    result = CliRunner().invoke(
        cli,
        ["bounces", "import", str(folder)],
        env={**env_for(app), "NEWSLETTER_BOUNCE_ADDRESS": "bounces@store.example"},
    )
    assert result.exit_code == 0, result.output
    assert "1 recorded" in result.stdout and "1 refused" in result.stdout
    assert "huge.eml: refused: too large" in result.stderr
    assert counts(runtime) == (1, 1)


def test_the_serve_command_receives_until_stopped(sent, tmp_path):
    app, runtime, deliveries = sent
    ann = deliveries["ann@example.com"]
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
        **env_for(app),
        "NEWSLETTER_BOUNCE_ADDRESS": "bounces@store.example",
    }
    server = subprocess.Popen(
        [NEWSLETTER, "bounces", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: server.poll() is not None or _listening(port), what="bounces serve to listen")
        assert server.poll() is None, server.communicate()[1]
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail("", [ann.verp_address], ann.report("gmail-user-unknown.eml"))
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "recorded: bounce_hard 5.1.1 on delivery" in err  # one log line per report
    with runtime.sessions() as session:
        assert session.get(Delivery, ann.ref.row_id).bounce_kind == "hard"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
