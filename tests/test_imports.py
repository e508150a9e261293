"""`newsletter subscribers import`: evidence rows go active with their evidence, others get double opt-in."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.models import ConsentEvent, OutboxEmail, Subscriber, SuppressionReason
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import suppression
from tests.conftest import confirm_link, csrf_token
from tests.test_cli import env_for

LIST = (
    "email,first_name,topics,consented_at,consent_source,consent_ip\n"
    "ann@example.com,Ann,newsletter early-access,2025-03-04T10:20:30+01:00,checkout form,198.51.100.4\n"
    "bob@example.com,Bob,,,,\n"
    "cid@example.com,,newsletter,2025-01-01T00:00:00Z,popup,\n"
    "sue@example.com,Sue,newsletter,2025-01-01T00:00:00Z,popup,\n"
    "sal@example.com,Sal,newsletter,,,\n"
    "old@example.com,Old,newsletter,2025-01-01T00:00:00Z,popup,\n"
    "not an address,X,newsletter,,,\n"
    "dee@example.com,Dee,gardening,,,\n"
    "eli@example.com,Eli,newsletter,2025-01-01,,\n"
    "fox@example.com,Fox,newsletter,2099-01-01T00:00:00Z,popup,\n"
    "gil@example.com,Gil,newsletter,not a date,popup,\n"
    "ANN@example.com,Ann,newsletter,2025-03-04T10:20:30+01:00,checkout form,\n"
)


def run_import(app, path, *args, env=None):
    return CliRunner().invoke(
        cli, ["subscribers", "import", str(path), *args], env={**env_for(app), **(env or {})}
    )


def by_email(session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_hash == address_hash(email)))


def ledger(session, subscriber_id: int) -> list[ConsentEvent]:
    return list(
        session.scalars(
            select(ConsentEvent).where(ConsentEvent.subscriber_id == subscriber_id).order_by(ConsentEvent.id)
        )
    )


def test_import_with_and_without_evidence(app, client, runtime, work, smtp_sink, make_subscriber, tmp_path):
    make_subscriber("old@example.com", topics=("product-news",))  # already active: left alone
    with runtime.sessions() as session:
        suppression.suppress(session, address_hash("sue@example.com"), SuppressionReason.COMPLAINED, "test")
        suppression.suppress(session, address_hash("sal@example.com"), SuppressionReason.UNSUBSCRIBED, "t")
        session.commit()
    csv_file = tmp_path / "mailchimp.csv"
    csv_file.write_text(LIST, "utf-8")
    sha256 = hashlib.sha256(LIST.encode()).hexdigest()

    result = run_import(app, csv_file, "--source", "mailchimp", "--topics", "newsletter")
    assert result.exit_code == 1, result.output  # rows were refused: scripts must see it
    assert result.stderr.splitlines()[-1].startswith(f"{csv_file}: 5 row(s) refused")
    out = result.output
    assert "imported with consent evidence: 2" in out
    assert "pending, confirmation sent: 1" in out
    assert "skipped, suppressed: 2" in out
    assert "skipped, already active: 1" in out
    assert "skipped, repeated in the file: 1" in out
    assert "bad rows: 5" in out
    assert f"file sha256: {sha256}" in out
    bad = {line.split(": line ")[1].split(":")[0]: line for line in out.splitlines() if ": line " in line}
    assert sorted(bad, key=int) == ["8", "9", "10", "11", "12"]
    assert "unknown topics gardening" in bad["9"]
    assert "needs both consented_at and consent_source" in bad["10"]
    assert "in the future" in bad["11"]
    assert "not an ISO 8601 date" in bad["12"]

    with runtime.sessions() as session:
        ann = by_email(session, "ann@example.com")
        assert ann.status == "active" and ann.first_name == "Ann"
        assert ann.confirmed_at == datetime(2025, 3, 4, 9, 20, 30)
        assert {s.topic.slug: s.status.value for s in ann.subscriptions} == {
            "newsletter": "active",
            "early-access": "active",
        }
        [event] = ledger(session, ann.id)
        assert event.action == "imported" and event.source == "import:mailchimp"
        assert event.occurred_at == datetime(2025, 3, 4, 9, 20, 30)  # the original time, in UTC
        assert event.ip == "198.51.100.4" and event.topics == ["early-access", "newsletter"]
        assert event.details["consent_source"] == "checkout form"
        assert event.details["file_sha256"] == sha256 and event.details["line"] == 2
        assert event.details["tool"] == "mailchimp"

        cid = by_email(session, "cid@example.com")
        assert cid.status == "active" and [s.topic.slug for s in cid.subscriptions] == ["newsletter"]

        bob = by_email(session, "bob@example.com")
        assert bob.status == "pending"
        assert {s.topic.slug: s.status.value for s in bob.subscriptions} == {"newsletter": "pending"}
        [request] = ledger(session, bob.id)
        assert request.action == "signup_requested" and request.source == "import:mailchimp"
        assert request.wording_hash is None  # they were not shown our form's wording

        old = by_email(session, "old@example.com")
        assert ledger(session, old.id) == [] and [s.topic.slug for s in old.subscriptions] == ["product-news"]
        for email in ("sue@example.com", "sal@example.com", "dee@example.com", "fox@example.com"):
            assert by_email(session, email) is None

    # The confirmation goes through the outbox and a worker, like a signup from the form.
    assert smtp_sink.pending() == 0
    work()
    [mail] = smtp_sink.take()
    assert mail["To"] == "bob@example.com"
    link = confirm_link(mail).replace("https://newsletter.test", "")
    client.post(link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))})
    work()
    [welcome] = smtp_sink.take()  # he confirmed: welcomed (the imported-with-evidence are not)
    assert welcome["To"] == "bob@example.com" and "Welcome" in welcome["Subject"]
    with runtime.sessions() as session:
        assert by_email(session, "bob@example.com").status == "active"
        events_before = session.scalar(select(func.count(ConsentEvent.id)))
        outbox_before = session.scalar(select(func.count(OutboxEmail.id)))

    # A second run of the same file changes nothing and mails nobody.
    again = run_import(app, csv_file, "--source", "mailchimp", "--topics", "newsletter")
    assert again.exit_code == 1, again.output  # the same bad rows, refused again
    assert "imported with consent evidence: 0" in again.output
    assert "pending, confirmation sent: 0" in again.output
    assert "skipped, already active: 4" in again.output
    work()
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(ConsentEvent.id))) == events_before
        assert session.scalar(select(func.count(OutboxEmail.id))) == outbox_before


def test_rerun_while_confirmation_pending_sends_nothing_more(app, runtime, work, smtp_sink, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,topics\nbob@example.com,newsletter\n")
    first = run_import(app, csv_file, "--source", "old-tool")
    assert "pending, confirmation sent: 1" in first.output, first.output
    second = run_import(app, csv_file, "--source", "old-tool")
    assert "skipped, already pending (confirmation requested before): 1" in second.output
    work()
    assert len(smtp_sink.take()) == 1


def test_evidence_activates_a_pending_subscriber(app, signup, runtime, work, smtp_sink, tmp_path):
    signup("ann@example.com", topics=["product-news"])
    work()
    smtp_sink.take()
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,topics,consented_at,consent_source\nann@example.com,newsletter,2025-05-05,shop\n"
    )
    result = run_import(app, csv_file, "--source", "shopify")
    assert "imported with consent evidence: 1" in result.output, result.output
    with runtime.sessions() as session:
        ann = by_email(session, "ann@example.com")
        assert ann.status == "active"
        # The evidence covers the imported topic only; the form's topic still waits for its confirmation.
        assert {s.topic.slug: s.status.value for s in ann.subscriptions} == {
            "product-news": "pending",
            "newsletter": "active",
        }
        assert [e.action for e in ledger(session, ann.id)] == ["signup_requested", "imported"]


def test_confirmations_respect_the_per_address_cap(app, runtime, work, smtp_sink, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,topics\nbob@example.com,newsletter\n")
    result = run_import(
        app, csv_file, "--source", "old-tool", env={"NEWSLETTER_CONFIRMATIONS_PER_ADDRESS": "0"}
    )
    assert "pending, confirmation held back (daily cap for the address): 1" in result.output, result.output
    work()
    assert smtp_sink.take() == []
    with runtime.sessions() as session:
        assert by_email(session, "bob@example.com").status == "pending"


def test_a_header_with_unknown_columns_imports_nothing(app, runtime, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email,consented,topics\nbob@example.com,2025-01-01,newsletter\n")
    result = run_import(app, csv_file, "--source", "old-tool")
    assert "line 1: the header needs an 'email' column" in result.output
    assert "(unknown: consented)" in result.output
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 0


def test_source_name_is_checked(app, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email\n")
    result = run_import(app, csv_file, "--source", "bad/name")
    assert result.exit_code == 1 and "--source: 1 to 43 letters" in result.output
    # ``import:`` + the name is the ledger's wording version (50 characters): a longer one is refused
    long = run_import(app, csv_file, "--source", "s" * 44)
    assert long.exit_code == 1 and "--source: 1 to 43 letters" in long.output


def test_the_longest_source_name_fits_the_ledger(app, runtime, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,topics,consented_at,consent_source,consent_wording\n"
        "ann@example.com,newsletter,2025-01-01T00:00:00Z,popup,Yes please\n"
    )
    result = run_import(app, csv_file, "--source", "s" * 43)
    assert result.exit_code == 0, result.output
    with runtime.sessions() as session:
        assert session.scalar(select(func.count(Subscriber.id))) == 1


def test_topic_can_be_repeated_like_partners_import_and_mixes_with_topics(app, runtime, tmp_path):
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "email,first_name,consented_at,consent_source\numa@example.com,Uma,2025-01-01T00:00:00Z,popup\n"
    )
    result = run_import(
        app, csv_file, "--source", "mailchimp", "--topic", "newsletter", "--topics", "product-news,newsletter"
    )
    assert result.exit_code == 0, result.output
    with runtime.sessions() as session:
        uma = by_email(session, "uma@example.com")
        assert {s.topic.slug for s in uma.subscriptions} == {"newsletter", "product-news"}


def test_repeats_far_apart_are_found_in_the_database_and_dispatch_waits_for_the_commit(
    app, runtime, monkeypatch
):
    """The seen-addresses table (not a set in memory) finds a repeat CHUNKs later; a rolled-back
    import dispatches nothing, and the next one on the same connection starts from an empty table."""
    from newsletter.subscribers import imports

    monkeypatch.setattr(imports, "CHUNK", 3)  # the session lets go of its objects every 3 rows
    rows = [
        f"p{i}@example.com,,," if i % 2 else f"p{i}@example.com,,2025-01-01T00:00:00Z,form" for i in range(10)
    ]
    lines = ["email,first_name,consented_at,consent_source", *rows, "P1@example.com,,,", "p8@example.com,,,"]
    dispatched: list[int] = []

    def run():
        return imports.import_subscribers(
            session,
            runtime.redis,
            runtime.settings,
            iter(line + "\n" for line in lines),
            source="old-tool",
            file_sha256="0" * 64,
            dispatch=dispatched.append,
            default_topics=["newsletter"],
        )

    with runtime.sessions() as session:
        report = run()
        assert (report.imported, report.confirmation_sent, report.skipped["repeated in the file"]) == (
            5,
            5,
            2,
        )
        assert dispatched == []
        session.rollback()
    assert dispatched == []  # nothing committed, nothing sent
    with runtime.sessions() as session:
        report = run()
        assert report.skipped["repeated in the file"] == 2 and report.confirmation_sent == 5
        session.commit()
        outbox = sorted(session.scalars(select(OutboxEmail.id)))
    assert sorted(dispatched) == outbox and len(outbox) == 5


def test_chunk_boundaries_change_nothing(app, runtime, make_subscriber, tmp_path, monkeypatch):
    """Chunks of two rows: a repeat chunks later, the skips and the ledger are as in one chunk."""
    from newsletter.subscribers import imports

    monkeypatch.setattr(imports, "CHUNK", 2)
    make_subscriber("old@example.com", topics=("product-news",))
    with runtime.sessions() as session:
        suppression.suppress(session, address_hash("sue@example.com"), SuppressionReason.COMPLAINED, "test")
        suppression.suppress(session, address_hash("sal@example.com"), SuppressionReason.UNSUBSCRIBED, "t")
        session.commit()
    csv_file = tmp_path / "mailchimp.csv"
    csv_file.write_text(LIST + "bob@example.com,Bob,,,,\nsue@example.com,,,,,\n", "utf-8")
    out = run_import(app, csv_file, "--source", "mailchimp", "--topics", "newsletter").output
    assert "imported with consent evidence: 2" in out
    assert "pending, confirmation sent: 1" in out
    assert "skipped, suppressed: 2" in out
    assert "skipped, already active: 1" in out
    assert "skipped, repeated in the file: 3" in out
    assert "bad rows: 5" in out
    with runtime.sessions() as session:
        [ann_event] = ledger(session, by_email(session, "ann@example.com").id)
        assert ann_event.details["line"] == 2 and ann_event.ip == "198.51.100.4"
        assert ann_event.wording_version is None and ann_event.wording_hash is None
        bob = by_email(session, "bob@example.com")
        [request] = ledger(session, bob.id)
        assert request.details == {"email": "confirm"} and request.topics == ["newsletter"]
        [outbox] = session.scalars(select(OutboxEmail).where(OutboxEmail.subscriber_id == bob.id))
        assert outbox.request_event_id == request.id and outbox.kind == "confirm"


def test_the_cap_is_counted_in_the_outbox_when_redis_is_down(make_app, monkeypatch):
    """Redis down: the mailbox cap counts the outbox (this transaction's rows too), in and across chunks."""
    import redis

    from newsletter.mail.addresses import mailbox_hash
    from newsletter.subscribers import imports

    monkeypatch.setattr(imports, "CHUNK", 2)
    runtime = make_app(CONFIRMATIONS_PER_ADDRESS=1).extensions["newsletter"]
    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    lines = ["email", "ann+a@example.com", "ann+b@example.com", "ann+c@example.com", "cid@example.com"]
    with runtime.sessions() as session:
        report = imports.import_subscribers(
            session,
            down,
            runtime.settings,
            iter(line + "\n" for line in lines),
            source="old-tool",
            file_sha256="0" * 64,
            dispatch=lambda _: None,
            default_topics=["newsletter"],
        )
        session.commit()
        assert (report.confirmation_sent, report.confirmation_capped) == (2, 2)
        mailed = {o.subscriber_id: o for o in session.scalars(select(OutboxEmail))}
        for email, sent in [("ann+a", True), ("ann+b", False), ("ann+c", False), ("cid", True)]:
            subscriber = by_email(session, f"{email}@example.com")
            [request] = ledger(session, subscriber.id)
            assert subscriber.status == "pending" and request.action == "signup_requested"
            if sent:
                assert request.details == {"email": "confirm"}
                assert mailed[subscriber.id].request_event_id == request.id
                assert mailed[subscriber.id].mailbox_hash == mailbox_hash(f"{email}@example.com")
            else:
                assert request.details == {"email": "not sent: daily cap for this mailbox"}
                assert subscriber.id not in mailed


def test_an_address_signed_up_during_the_chunk_goes_through_the_one_row_path(runtime, database_url):
    """A signup commits two of the chunk's addresses between its lookup and its INSERT: no error,
    the evidence row activates the new pending subscriber, the other row leaves it pending."""
    from sqlalchemy import event, insert

    from newsletter.subscribers import imports

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: no signup commits while the import holds it")
    signed_up = []

    def signup_meanwhile(_conn, _cursor, statement, *_):
        if "INSERT INTO subscribers" in statement and not signed_up:
            signed_up.append(True)
            with runtime.engine.begin() as other:
                for email in ("dan@example.com", "eve@example.com"):
                    other.execute(
                        insert(Subscriber.__table__).values(
                            email=email, email_hash=address_hash(email), status="pending"
                        )
                    )

    lines = [
        "email,consented_at,consent_source",
        "dan@example.com,2025-01-01T00:00:00Z,popup",
        "eve@example.com,,",
        "fay@example.com,2025-01-01T00:00:00Z,popup",
    ]
    event.listen(runtime.engine, "before_cursor_execute", signup_meanwhile)
    try:
        with runtime.sessions() as session:
            report = imports.import_subscribers(
                session,
                runtime.redis,
                runtime.settings,
                iter(line + "\n" for line in lines),
                source="old-tool",
                file_sha256="0" * 64,
                dispatch=lambda _: None,
                default_topics=["newsletter"],
            )
            session.commit()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", signup_meanwhile)
    assert signed_up and report.imported == 2 and report.confirmation_sent == 0
    assert report.skipped == {"already pending (confirmation requested before)": 1}
    with runtime.sessions() as session:
        for email, status in [("dan", "active"), ("eve", "pending"), ("fay", "active")]:
            subscriber = by_email(session, f"{email}@example.com")
            assert subscriber.status == status
            assert [e.action for e in ledger(session, subscriber.id)] == (
                ["imported"] if status == "active" else []
            )
