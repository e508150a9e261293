"""Disclosures on the person's record, withdrawals that reach the partner, and the partner limits."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from newsletter.core import clock
from newsletter.models import ConsentAction, ConsentEvent, OutboxEmail, PartnerSuppression, Subscriber
from newsletter.models.partners import PartnerExchange
from newsletter.models.subscribers import address_hash
from newsletter.partners import exchange, files
from newsletter.partners.registry import get_partner
from newsletter.partners.signing import request_headers
from newsletter.subscribers import data_rights, links
from newsletter.subscribers.jobs import sweep_outbox
from tests.test_partners import SECRET, contact, grant_at, signed_file, write
from tests.test_preferences import post_preferences

pytest_plugins = ["tests.partner_stores"]


def disclosures(store, email):
    with store.runtime.sessions() as session:
        sid = session.scalar(select(Subscriber.id).where(Subscriber.email == email))
        return [
            e.details
            for e in session.scalars(
                select(ConsentEvent).where(
                    ConsentEvent.subscriber_id == sid, ConsentEvent.action == ConsentAction.PARTNER_DISCLOSED
                )
            )
        ]


def test_every_export_is_on_the_record_and_in_the_data_download(stores, smtp_sink, tmp_path):
    a, _ = stores()
    grant_at(a, smtp_sink, "ann@example.com")
    grant_at(a, smtp_sink, "bob@example.com", partners=())  # never agreed: never disclosed
    out = tmp_path / "for-b.jsonl"
    assert a.cli("partners", "export", "store-b", "--out", str(out)).exit_code == 0
    header = json.loads(out.read_bytes().splitlines()[0])
    path = "/api/partners/store-b/export"
    response = a.client().get(path, headers=request_headers(SECRET, "GET", path))
    assert response.status_code == 200
    api_header = json.loads(response.get_data().splitlines()[0])
    assert header["exchange"] != api_header["exchange"]
    ann = disclosures(a, "ann@example.com")
    assert [(d["exchange_id"], d["channel"], d["partner_name"]) for d in ann] == [
        (header["exchange"], "file", "Store B"),
        (api_header["exchange"], "api", "Store B"),
    ]
    assert disclosures(a, "bob@example.com") == []
    with a.runtime.sessions() as session:
        runs = session.scalars(select(PartnerExchange).order_by(PartnerExchange.id)).all()
        assert [(r.direction, r.channel, r.status, r.records) for r in runs] == [
            ("export", "file", "done", 1),
            ("export", "api", "done", 1),
        ]
        download = data_rights.export_address(session, "ann@example.com")
    assert [(d["partner_name"], d["exchange_id"]) for d in download["partner_disclosures"]] == [
        ("Store B", header["exchange"]),
        ("Store B", api_header["exchange"]),
    ]
    assert all(d["at"] for d in download["partner_disclosures"])


def test_a_stream_stopped_half_way_is_a_failed_exchange_with_its_disclosures_kept(stores, smtp_sink):
    a, _ = stores()
    grant_at(a, smtp_sink, "ann@example.com")
    with a.runtime.sessions() as session:
        stream = exchange.export_contacts(session, a.settings, get_partner(session, "store-b"))
        next(stream)  # the only chunk: the person's page was recorded before it was handed out
        stream.close()
        run = session.scalars(select(PartnerExchange)).one()
        assert run.status == "failed" and "not read to the end" in run.error
    assert len(disclosures(a, "ann@example.com")) == 1


def _export(store, previous_id=None) -> tuple[list[dict], int]:
    with store.runtime.sessions() as session:
        previous = session.get(PartnerExchange, previous_id) if previous_id else None
        chunks = list(
            exchange.export_contacts(
                session, store.settings, get_partner(session, "store-b"), previous=previous
            )
        )
    lines = [json.loads(line) for line in b"".join(chunks).splitlines()]
    return lines[1:-1], lines[0]["exchange"]


def _withdraw(store, email):
    with store.runtime.sessions() as session:
        person = session.scalar(select(Subscriber).where(Subscriber.email == email))
    post_preferences(store.client(), links.preferences_url(store.settings, person), partners=[])


def test_a_withdrawal_stops_the_export_and_suppresses_at_the_partner(stores, smtp_sink, tmp_path):
    a, b = stores()
    for email in ("ann@example.com", "bob@example.com", "cy@example.com"):
        grant_at(a, smtp_sink, email)
    records, first = _export(a)
    assert sorted(r["email"] for r in records) == ["ann@example.com", "bob@example.com", "cy@example.com"]
    path = write(
        tmp_path / "1.jsonl", files.write_signed(files.CONTACTS, "store-a", "store-b", SECRET, records)
    )
    assert b.cli("partners", "import", "store-a", str(path)).exit_code == 0
    b.work()
    mails = {m["To"]: m for m in smtp_sink.take()}
    assert b.follow_confirm(mails["cy@example.com"]).status_code == 200  # cy confirms at B
    b.work()
    smtp_sink.take()
    # bob's invitation at B is still unsent when the withdrawal arrives (a second import of him)
    with b.runtime.sessions() as session:
        session.execute(
            OutboxEmail.__table__.update()
            .where(OutboxEmail.subscriber_id == session.scalar(select(Subscriber.id).where(
                Subscriber.email == "bob@example.com")))
            .values(sent_at=None, claimed_at=None)
        )  # fmt: skip
        session.commit()

    _withdraw(a, "bob@example.com")
    _withdraw(a, "cy@example.com")
    records, second = _export(a, first)
    assert records == [
        {"withdrawn": address_hash("bob@example.com")},
        {"withdrawn": address_hash("cy@example.com")},
    ]
    records3, _ = _export(a)  # a full export: withdrawals again, the withdrawn people not
    assert [r.get("email") for r in records3] == ["ann@example.com", None, None]

    path = signed_file(tmp_path, records, name="2.jsonl")
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 0 and "withdrawals applied (the partner's opt-outs now): 2" in result.output
    b.work()
    assert smtp_sink.take() == []  # bob's unsent invitation was cancelled
    with b.runtime.sessions() as session:
        held = set(session.scalars(select(PartnerSuppression.email_hash)))
        assert held == {address_hash("bob@example.com"), address_hash("cy@example.com")}
        bob, cy = (
            session.scalar(select(Subscriber).where(Subscriber.email == e))
            for e in ("bob@example.com", "cy@example.com")
        )
        assert cy.status.value == "active"  # their own confirmation at B stands
        [outbox] = session.scalars(select(OutboxEmail).where(OutboxEmail.subscriber_id == bob.id)).all()
        assert outbox.sent_at is None and outbox.failed_at is not None
        outcomes = {
            e.subscriber_id: e.details["outcome"]
            for e in session.scalars(
                select(ConsentEvent).where(ConsentEvent.action == ConsentAction.PARTNER_WITHDRAWN)
            )
        }
        assert outcomes == {
            bob.id: "invitation cancelled",
            cy.id: "kept: the person's own consent here stands",
        }
    # bob sent again by A is not invited on A's word
    path = signed_file(tmp_path, [contact("bob@example.com")], name="3.jsonl")
    result = b.cli("partners", "import", "store-a", str(path))
    assert "skipped, opted out at partner: 1" in result.output


def test_old_format_files_still_import(stores, smtp_sink, tmp_path):
    _, b = stores()
    path = signed_file(tmp_path, [contact("ann@example.com")])  # no exchange ids, no withdrawals
    assert "exchange" not in json.loads(path.read_bytes().splitlines()[0])
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code == 0 and "invited: 1" in result.output


def test_a_malformed_withdrawal_record_refuses_the_file(stores, tmp_path):
    _, b = stores()
    path = signed_file(tmp_path, [{"withdrawn": "not-a-hash"}])
    result = b.cli("partners", "import", "store-a", str(path))
    assert result.exit_code != 0 and "line 2: a withdrawal record is" in result.output


def test_the_partner_api_is_rate_limited_per_partner(stores):
    a, _ = stores(PARTNER_API_RATE_LIMIT="2/60")
    client = a.client()
    path = "/api/partners/store-b/export"
    answers = [client.get(path, headers=request_headers(SECRET, "GET", path)) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert 0 < int(answers[2].headers["Retry-After"]) <= 60
    assert "PARTNER_API_RATE_LIMIT" in answers[2].get_json()["error"]


def test_the_daily_invitation_cap_holds_and_the_rest_go_next_day(stores, smtp_sink, tmp_path):
    _, b = stores(PARTNER_INVITES_PER_DAY="2")
    emails = [f"p{i}@example.com" for i in range(5)]
    path = signed_file(tmp_path, [contact(e) for e in emails])
    assert "invited: 5" in b.cli("partners", "import", "store-a", str(path)).output
    try:
        b.work()
        first_day = [m["To"] for m in smtp_sink.take()]
        assert len(first_day) == 2
        clock.travel(timedelta(minutes=5))
        b.job(sweep_outbox)
        b.work()
        assert smtp_sink.take() == []  # held until midnight UTC, not given up
        now = clock.now()
        clock.travel(exchange_midnight(now) - now + timedelta(minutes=1))
        b.job(sweep_outbox)
        b.work()
        second_day = [m["To"] for m in smtp_sink.take()]
        assert len(second_day) == 2
        clock.travel(timedelta(days=1))
        b.job(sweep_outbox)
        b.work()
        third_day = [m["To"] for m in smtp_sink.take()]
        assert sorted(first_day + second_day + third_day) == sorted(emails)  # each once, none dropped
        clock.travel(timedelta(days=1))
        b.job(sweep_outbox)
        b.work()
        assert smtp_sink.take() == []
        with b.runtime.sessions() as session:
            rows = session.scalars(select(OutboxEmail)).all()
            assert all(r.sent_at and r.failed_at is None and r.attempts == 1 for r in rows)
    finally:
        clock.reset()


def exchange_midnight(now):
    from newsletter.subscribers.partner_cap import next_day

    return next_day(now)
