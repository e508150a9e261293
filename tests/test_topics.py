"""``newsletter topics add|rename|retire|list`` and what a retired topic means: off the forms, no more
mail (not yet started waves select nobody, queued rows are skipped, a send under way stops at the next
message), a located ``campaign validate`` problem, and the person's history kept. SQLite and PostgreSQL,
real Redis and SMTP on loopback."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, select, text

from newsletter.campaigns import batches, waves
from newsletter.campaigns.ledger import TOPIC_RETIRED, Ledger, batch_ranges
from newsletter.cli import cli
from newsletter.core import clock
from newsletter.core.migrate import downgrade, upgrade
from newsletter.models import Campaign, CampaignStatus, ConsentEvent, DeliveryState, Role, Subscription, Topic
from newsletter.subscribers import links
from tests import campaign_helpers
from tests.conftest import confirm_link, csrf_token
from tests.sending_helpers import now_floor, recipients, rows, run_engine, write_campaign
from tests.test_admin import add, sign_in
from tests.test_cli import env_for
from tests.test_sending import NO_CAPS, schedule

SEEDED = ["newsletter", "early-access", "product-news"]


def topics(app, *args):
    return CliRunner().invoke(cli, ["topics", *args], env=env_for(app))


def one_line_error(result) -> str:
    """The refusal's message: exit 1, one line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


def table(runtime) -> list[tuple]:
    with runtime.sessions() as session:
        return [
            tuple(r)
            for r in session.execute(
                select(Topic.slug, Topic.name, Topic.description, Topic.retired_at).order_by(Topic.id)
            )
        ]


def listed(app) -> list[dict]:
    result = topics(app, "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def offered_on(client, url: str) -> list[str]:
    page = client.get(url).get_data(as_text=True)
    return [
        slug
        for slug in ["newsletter", "early-access", "product-news", "pet-care"]
        if f'id="topic-{slug}"' in page
    ]


def test_add_and_rename_show_on_the_signup_form_and_in_the_list(app, client, runtime, make_subscriber):
    make_subscriber("ann@example.com", topics=("newsletter", "product-news"))
    added = topics(app, "add", "pet-care", "Pet care", "--description", "Food, toys and vets' advice.")
    assert added.exit_code == 0, added.output
    assert added.stdout == "added pet-care ('Pet care'), last on the forms\n"
    assert offered_on(client, "/subscribe") == [*SEEDED, "pet-care"]
    assert "Food, toys and vets&#39; advice." in client.get("/subscribe").get_data(as_text=True)

    renamed = topics(app, "rename", "pet-care", "Pets and their people")
    assert renamed.exit_code == 0, renamed.output
    assert (
        renamed.stdout
        == "renamed pet-care: 'Pet care' -> 'Pets and their people' (the slug stays pet-care)\n"
    )
    page = client.get("/subscribe").get_data(as_text=True)
    assert "Pets and their people" in page and "Pet care" not in page

    assert [(t["slug"], t["label"], t["subscribers"], t["retired_at"]) for t in listed(app)] == [
        ("newsletter", "Newsletter", 1, None),
        ("early-access", "Early-access sales", 0, None),
        ("product-news", "Product news", 1, None),
        ("pet-care", "Pets and their people", 0, None),
    ]
    plain = topics(app, "list")
    assert plain.exit_code == 0 and plain.stdout.splitlines()[0].split() == [
        "slug",
        "label",
        "subscribers",
        "state",
        "also",
        "in",
    ]
    assert plain.stdout.splitlines()[4].split() == [
        "pet-care",
        "Pets",
        "and",
        "their",
        "people",
        "0",
        "offered",
        "-",
    ]
    assert plain.stdout.splitlines()[1].split()[-2:] == ["de", "fr"]  # the seeded topics' own labels


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "Pet_Care", "Pets"],
            "bad slug 'Pet_Care': use lowercase letters, digits and single hyphens between them "
            "(at most 50 characters), e.g. 'pet-care'",
        ),
        (["add", "pets-", "Pets"], None),
        (["add", "pets--care", "Pets"], None),
        (["add", "p" * 51, "Pets"], None),
        (
            ["add", "newsletter", "News"],
            "topic 'newsletter' exists (label 'Newsletter'); `newsletter topics rename` changes its label",
        ),
        (["add", "pets", "   "], "the label is empty"),
        (["add", "pets", "Pets\nand more"], "the label holds a control character (a tab or a line break?)"),
        (["add", "pets", "x" * 101], "the label is 101 characters long; at most 100"),
        (["rename", "nope", "Nope"], "no topic 'nope' (known: newsletter, early-access, product-news)"),
        (["rename", "newsletter", ""], "the label is empty"),
        (["retire", "nope"], "no topic 'nope' (known: newsletter, early-access, product-news)"),
        (
            ["rename", "newsletter", "Neuigkeiten", "--language", "xx"],
            "no language 'xx' is shipped (shipped: en, de, fr)",
        ),
    ],
)
def test_refusals_are_one_line_and_change_nothing(app, runtime, args, message):
    before = table(runtime)
    got = one_line_error(topics(app, *args))
    if message is None:
        assert got.startswith(f"bad slug {args[1]!r}: ")
    else:
        assert got == message
    assert table(runtime) == before


def test_retire_is_idempotent_keeps_subscriptions_and_a_retired_slug_is_never_reused(
    app, runtime, make_subscriber
):
    ann = make_subscriber("ann@example.com", topics=("newsletter", "product-news"))
    with runtime.sessions() as session:
        events_before = session.query(ConsentEvent).count()
    first = topics(app, "retire", "product-news")
    assert first.exit_code == 0, first.output
    assert first.stdout == "retired product-news: no form offers it and no campaign mails it from now on\n"
    (retired_at,) = [t[3] for t in table(runtime) if t[0] == "product-news"]
    assert retired_at is not None

    clock.travel(timedelta(days=1))
    again = topics(app, "retire", "product-news")
    assert again.exit_code == 0
    assert (
        again.stdout
        == f"product-news was already retired on {retired_at:%Y-%m-%d %H:%M} UTC; nothing changed\n"
    )
    assert [t[3] for t in table(runtime) if t[0] == "product-news"] == [retired_at]  # the first date stays

    with runtime.sessions() as session:
        kept = {
            s.topic.slug: s.status.value
            for s in session.scalars(select(Subscription).where(Subscription.subscriber_id == ann.id))
        }
        assert session.query(ConsentEvent).count() == events_before  # nobody's consent changed
    assert kept == {"newsletter": "active", "product-news": "active"}
    product_news = next(t for t in listed(app) if t["slug"] == "product-news")
    assert product_news["subscribers"] == 1 and product_news["retired_at"] == retired_at.isoformat() + "Z"
    assert "retired " + f"{retired_at:%Y-%m-%d}" in topics(app, "list").stdout

    assert one_line_error(topics(app, "add", "product-news", "Product news again")) == (
        f"topic 'product-news' exists, retired on {retired_at:%Y-%m-%d}; a slug is never reused "
        "(old emails and the consent ledger name it): choose another"
    )
    renamed = topics(app, "rename", "product-news", "Product news (ended)")
    assert renamed.exit_code == 0, renamed.output  # its label still shows in the person's history


def test_a_retired_topic_is_off_the_signup_and_preference_forms(
    app, client, runtime, signup, make_subscriber
):
    ann = make_subscriber("ann@example.com", topics=("newsletter", "product-news"))
    preferences = urlsplit(links.preferences_url(app.settings, ann)).path
    assert offered_on(client, "/subscribe") == SEEDED  # the topics are cached now
    assert offered_on(client, preferences) == SEEDED
    assert topics(app, "retire", "product-news").exit_code == 0

    # the retirement drops this process's cache at once (other processes: within 30 s)
    assert offered_on(client, "/subscribe") == ["newsletter", "early-access"]
    assert offered_on(client, preferences) == ["newsletter", "early-access"]
    refused = signup("bob@example.com", topics=["product-news"])
    assert refused.status_code == 400
    assert "not a valid choice" in refused.get_data(as_text=True)
    with runtime.sessions() as session:
        assert session.scalar(select(Subscription).where(Subscription.subscriber_id != ann.id)) is None

    # saving the preference centre leaves the retired topic's subscription as it was
    page = client.get(preferences).get_data(as_text=True)
    saved = client.post(
        preferences,
        data={
            "csrf_token": csrf_token(page),
            "frequency": "weekly",
            "time_zone": "UTC",
            "first_name": "Ann",
            "topics": ["newsletter", "early-access"],
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.get_data(as_text=True)
    with runtime.sessions() as session:
        kept = {
            s.topic.slug: s.status.value
            for s in session.scalars(select(Subscription).where(Subscription.subscriber_id == ann.id))
        }
    assert kept == {"newsletter": "active", "early-access": "active", "product-news": "active"}


def test_the_data_download_keeps_the_retired_topic_in_the_history(
    app, client, runtime, signup, work, smtp_sink
):
    signup("ann@example.com", topics=["newsletter", "product-news"])
    work()
    link = confirm_link(smtp_sink.take()[0]).replace("https://newsletter.test", "")
    client.post(link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))})
    work()
    [welcome] = smtp_sink.take()
    assert "Product news" in welcome.get_body(("plain",)).get_content()
    assert topics(app, "retire", "product-news").exit_code == 0

    result = CliRunner().invoke(cli, ["subscribers", "export", "ann@example.com"], env=env_for(app))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["topics"] == {"newsletter": "active", "product-news": "active"}
    assert list(data["topics_retired"]) == ["product-news"]
    assert [(e["action"], e["topics"]) for e in data["consent_ledger"]] == [
        ("signup_requested", ["newsletter", "product-news"]),
        ("confirmed", ["newsletter", "product-news"]),
    ]

    # the dashboard's profile keeps the row and says it is retired
    add(runtime, "vic@store.example", Role.VIEWER)
    assert sign_in(client, "vic@store.example").status_code == 303
    with runtime.sessions() as session:
        sid = session.scalar(select(Subscription.subscriber_id).limit(1))
    profile = unescape(client.get(f"/admin/subscribers/{sid}").get_data(as_text=True))
    row = re.search(r'<tr data-topic="product-news">(.*?)</tr>', profile, re.S).group(1)
    assert "Product news" in row and "retired" in row and "active" in row
    assert "retired" not in re.search(r'<tr data-topic="newsletter">(.*?)</tr>', profile, re.S).group(1)


def test_campaign_validate_and_schedule_refuse_a_retired_topic_at_its_position(app, runtime, tmp_path):
    folder = campaign_helpers.write_campaign(
        tmp_path, campaign_helpers.TOML.replace('topic = "newsletter"', 'topic = "product-news"'), slug="news"
    )
    env = {**env_for(app), "NEWSLETTER_BASE_URL": app.settings.base_url}
    ok = CliRunner().invoke(cli, ["campaign", "validate", str(folder)], env=env)
    assert ok.exit_code == 0, ok.output
    assert topics(app, "retire", "product-news").exit_code == 0

    result = CliRunner().invoke(cli, ["campaign", "validate", str(folder)], env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{folder}/campaign.toml:4:9: topic 'product-news' is retired: it is mailed to nobody "
        "(offered: newsletter, early-access)",
        f"{folder}: 1 error(s), 0 warning(s)",
    ]
    scheduled = CliRunner().invoke(cli, ["campaign", "schedule", str(folder)], env=env)
    assert (
        scheduled.exit_code == 1 and "is retired" in scheduled.output and "Traceback" not in scheduled.output
    )
    with runtime.sessions() as session:
        assert session.scalar(select(Campaign)) is None


def test_a_wave_that_starts_after_the_retirement_selects_nobody(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"p{i}@example.com", topics=("early-access",))
    start = now_floor() + timedelta(hours=1)
    campaign_id = schedule(runtime, write_campaign(tmp_path, waves=[("all", "all", start)]))
    assert topics(app, "retire", "early-access").exit_code == 0

    clock.travel(start - clock.now() + timedelta(minutes=1))
    run_engine(runtime, work)
    assert smtp_sink.take() == [] and rows(runtime) == []
    with runtime.sessions() as session:
        assert session.get(Campaign, campaign_id).status == CampaignStatus.DONE


def test_rows_queued_before_the_retirement_are_skipped_with_the_reason(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(4):
        make_subscriber(f"p{i}@example.com", topics=("early-access",))
    schedule(runtime, write_campaign(tmp_path, waves=[("all", "all", now_floor())]))
    with runtime.sessions() as session:
        for wave in waves.due_waves(session, clock.now()):
            waves.start_wave(session, wave, clock.now())
        session.commit()
    assert [r.state for r in rows(runtime)] == [DeliveryState.QUEUED] * 4
    assert topics(app, "retire", "early-access").exit_code == 0

    run_engine(runtime, work)
    assert smtp_sink.take() == []
    assert {(r.state, r.reason) for r in rows(runtime)} == {(DeliveryState.SKIPPED, TOPIC_RETIRED)}


def test_a_retirement_during_the_send_stops_at_the_next_message(
    make_app, make_subscriber, smtp_sink, tmp_path, monkeypatch
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    people = [make_subscriber(f"p{i}@example.com", topics=("newsletter",)) for i in range(5)]
    campaign_id = schedule(
        runtime, write_campaign(tmp_path, topic="newsletter", waves=[("all", "all", now_floor())])
    )
    with runtime.sessions() as session:
        for wave in waves.due_waves(session, clock.now()):
            waves.start_wave(session, wave, clock.now())
        session.commit()
        ((first_id, last_id),) = batch_ranges(session, campaign_id, clock.now(), 100)

    original = Ledger.mark_sent

    def operator_retires_as_the_first_message_is_marked(ledger, recipient, message_id):
        if recipient.subscriber_id == people[0].id:
            # before the mark: on PostgreSQL the mark's statement also checks the next row
            assert topics(app, "retire", "newsletter").exit_code == 0
        original(ledger, recipient, message_id)

    monkeypatch.setattr(Ledger, "mark_sent", operator_retires_as_the_first_message_is_marked)
    from newsletter.mail.transports import make_transport

    transport = make_transport(runtime.settings)
    with runtime.sessions() as session:
        report = batches.send_batch(
            session,
            runtime.redis,
            runtime.settings,
            transport,
            campaign_id,
            first_id,
            last_id,
            commit=session.commit,
        )
    transport.close()
    assert recipients(smtp_sink.take()) == {"p0@example.com": 1}
    assert report.sent == 1 and report.skipped == 4
    by_person = {r.subscriber_id: r for r in rows(runtime)}
    assert by_person[people[0].id].state == DeliveryState.SENT
    assert {(by_person[p.id].state, by_person[p.id].reason) for p in people[1:]} == {
        (DeliveryState.SKIPPED, TOPIC_RETIRED)
    }


def test_the_migration_goes_down_and_up_keeping_subscriptions(database_url):
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO subscribers (id, email, email_hash, status, created_at, frequency, "
                    "time_zone) VALUES (1, 'a@example.com', 'h', 'active', '2026-11-01 10:00', 'any', 'UTC')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO subscriptions (subscriber_id, topic_id, status, updated_at) "
                    "SELECT 1, id, 'active', '2026-11-01 10:00:00' FROM topics WHERE slug = 'product-news'"
                )
            )
            conn.execute(
                text("UPDATE topics SET retired_at = '2026-11-02 10:00:00' WHERE slug = 'product-news'")
            )
        downgrade(database_url, "0019")
        assert "retired_at" not in {c["name"] for c in inspect(engine).get_columns("topics")}
        upgrade(database_url)
        inspector = inspect(engine)
        assert "retired_at" in {c["name"] for c in inspector.get_columns("topics")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT slug, retired_at FROM topics ORDER BY id")).all() == [
                (slug, None) for slug in SEEDED
            ]
            assert conn.execute(text("SELECT subscriber_id, status FROM subscriptions")).all() == [
                (1, "active")
            ]
    finally:
        engine.dispose()


def test_a_topic_is_shown_in_the_reader_s_language(app, client, runtime, work, smtp_sink):
    """The seeded topics ship German and French labels; ``rename --language`` sets one; the form, the
    confirmed page and the welcome email show the label of the reader's language, else the default."""
    german = {"Accept-Language": "de"}
    assert "Produktneuheiten" in client.get("/subscribe", headers=german).get_data(as_text=True)
    french = client.get("/subscribe", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert "Nouveautés produits" in french and "Nouveaux arrivages" in french
    assert "Product news" in client.get("/subscribe", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )

    renamed = topics(app, "rename", "product-news", "Neu im Sortiment", "--language", "de")
    assert renamed.exit_code == 0, renamed.output
    assert renamed.stdout.startswith("renamed product-news in de: 'Produktneuheiten' -> 'Neu im Sortiment'")
    added = topics(app, "add", "pet-care", "Pet care")
    assert added.exit_code == 0, added.output
    page = client.get("/subscribe", headers=german).get_data(as_text=True)
    assert "Neu im Sortiment" in page and "Produktneuheiten" not in page
    assert "Neuheiten und Produkte, die wieder vorrätig sind." in page  # the description stays
    assert "Pet care" in page  # no German label yet: the default one
    assert "Product news" in client.get("/subscribe").get_data(as_text=True)  # English untouched
    assert {t["slug"]: t["languages"] for t in listed(app)} == {
        "newsletter": ["de", "fr"],
        "early-access": ["de", "fr"],
        "product-news": ["de", "fr"],
        "pet-care": [],
    }

    form = client.get("/subscribe", headers=german).get_data(as_text=True)
    answer = client.post(
        "/subscribe",
        headers=german,
        data={
            "csrf_token": csrf_token(form),
            "email": "jan@example.com",
            "topics": ["product-news", "pet-care"],
            "website": "",
        },
    )
    assert answer.status_code in (200, 302), answer.get_data(as_text=True)
    work()
    [confirmation] = smtp_sink.take()
    link = urlsplit(confirm_link(confirmation))
    path = f"{link.path}?{link.query}" if link.query else link.path
    token = csrf_token(client.get(path).get_data(as_text=True))
    confirmed = unescape(client.post(path, data={"csrf_token": token}).get_data(as_text=True))  # no header
    assert "Neu im Sortiment" in confirmed and "Pet care" in confirmed  # the stored language: German
    work()
    [welcome] = smtp_sink.take()
    text_part = welcome.get_body(("plain",)).get_content()
    assert "Neu im Sortiment" in text_part and "Product news" not in text_part


def test_the_translations_migration_leaves_a_renamed_seeded_topic_alone(database_url):
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        downgrade(database_url, "0020")
        with engine.begin() as conn:
            conn.execute(text("UPDATE topics SET name = 'Our news' WHERE slug = 'newsletter'"))
        upgrade(database_url)
        with engine.connect() as conn:
            labels = dict(conn.execute(text("SELECT slug, translations FROM topics")).all())
        labels = {
            slug: json.loads(value) if isinstance(value, str) else value for slug, value in labels.items()
        }
        assert labels["newsletter"] == {}  # the store's own label: no guess at its German
        assert labels["product-news"]["de"]["name"] == "Produktneuheiten"
        assert labels["early-access"]["fr"]["name"] == "Ventes en avant-première"
    finally:
        engine.dispose()
