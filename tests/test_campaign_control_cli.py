"""``newsletter campaign schedule|plan|send|pause|resume|cancel|status`` as an operator runs them.

click's runner with the app configured by NEWSLETTER_* variables, on the test database (SQLite
and PostgreSQL), Redis and the SMTP sink; the engine's tick and RQ's SimpleWorker do the sending.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from newsletter.campaigns import scheduling
from newsletter.campaigns.jobs import tick
from newsletter.cli import cli
from newsletter.core import clock
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState, Subscriber, SuppressionReason
from newsletter.subscribers import links, suppression
from tests.campaign_helpers import MJML, TOML
from tests.campaign_helpers import write_campaign as write_files
from tests.conftest import jobs_use
from tests.sending_helpers import add_customer, now_floor, recipients, rows, run_engine, write_campaign
from tests.test_cli import env_for
from tests.test_sending import day_zone, night_zone

NO_CAPS = {"MARKETING_CAPS": "", "QUIET_HOURS": ""}
#: seconds a test waits for a thread before calling it stuck (a bound for broken runs, not a timing)
FOLLOW_BOUND = 300


def run(app, *args, **settings):
    """``newsletter campaign ARGS`` with the app's settings (plus ``settings``) as NEWSLETTER_* variables."""
    env = {
        **env_for(app),
        "NEWSLETTER_BASE_URL": app.settings.base_url,
        **{f"NEWSLETTER_{key}": value for key, value in settings.items()},
    }
    try:
        return CliRunner().invoke(cli, ["campaign", *args], env=env)
    finally:
        # The command built its own app (and runtime); the jobs called here go back to the test's.
        jobs_use(app.extensions["newsletter"])


def lines(result) -> list[str]:
    return result.output.strip().splitlines()


def assert_one_line_error(result, message: str | re.Pattern) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "Traceback" not in result.output
    [line] = lines(result)
    if isinstance(message, str):
        assert line == f"Error: {message}"
    else:
        assert message.fullmatch(line), line


def campaign_row(runtime, slug: str = "test-sale") -> Campaign:
    with runtime.sessions() as session:
        campaign = session.scalar(select(Campaign).where(Campaign.slug == slug))
        if campaign is not None:
            campaign.waves  # noqa: B018 - loaded before the session closes
        session.expunge_all()
        return campaign


def count_campaigns(runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Campaign))


def at(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


# --- schedule ------------------------------------------------------------------------------------


def test_schedule_prints_waves_and_hash_is_idempotent_and_names_an_edit(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("ann@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        add_customer(session, "ann@example.com", tier="vip", orders_count=1, lifetime_value=Decimal(5))
    start = now_floor()
    vip_at, all_at, public_at = (
        start + timedelta(hours=1),
        start + timedelta(hours=2),
        start + timedelta(days=1),
    )
    folder = write_campaign(
        tmp_path, waves=[("vip", 'tier == "vip"', vip_at), ("everyone", "all", all_at)], public_at=public_at
    )
    digest = scheduling.content_hash(folder)
    expected = [
        f"test-sale: scheduled, content {digest[:12]}",
        f'  wave vip: starts {at(vip_at)} UTC (tier == "vip")',
        f"  wave everyone: starts {at(all_at)} UTC (all)",
        f"  deadline: {at(public_at)} UTC",
    ]
    first = run(app, "schedule", str(folder))
    assert first.exit_code == 0, first.output
    assert lines(first) == expected
    scheduled = campaign_row(runtime)
    assert scheduled.content_hash == digest and scheduled.status == CampaignStatus.SCHEDULED

    # The same files again: nothing changes, not even the time it was scheduled.
    clock.travel(timedelta(minutes=5))
    again = run(app, "schedule", str(folder))
    assert again.exit_code == 0, again.output
    assert lines(again) == expected
    assert count_campaigns(runtime) == 1
    assert campaign_row(runtime).id == scheduled.id
    assert campaign_row(runtime).scheduled_at == scheduled.scheduled_at

    # An edit: refused in one line naming the file, the frozen version untouched.
    mjml = folder / "email.mjml"
    mjml.write_text(mjml.read_text("utf-8").replace("</mj-text>", " Hurry!</mj-text>", 1), "utf-8")
    edited = scheduling.content_hash(folder)
    refused = run(app, "schedule", str(folder))
    assert_one_line_error(
        refused,
        f"test-sale: email.mjml changed since it was scheduled (content {digest[:12]}, now {edited[:12]}); "
        "use --reschedule to freeze the new version",
    )
    assert campaign_row(runtime).content_hash == digest

    # --reschedule while no wave started: the new version is frozen.
    rescheduled = run(app, "schedule", str(folder), "--reschedule")
    assert rescheduled.exit_code == 0, rescheduled.output
    assert lines(rescheduled) == [f"test-sale: scheduled, content {edited[:12]}", *expected[1:]]
    assert campaign_row(runtime).content_hash == edited
    assert count_campaigns(runtime) == 1

    # Once a wave has started, --reschedule refuses too.
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()
    work()
    assert recipients(smtp_sink.take()) == {"ann@example.com": 1}
    (folder / "notes.md").write_text("for the team\n", "utf-8")
    assert_one_line_error(
        run(app, "schedule", str(folder)),
        re.compile(r"Error: test-sale: notes\.md added since it was scheduled .*; use --reschedule .*"),
    )
    assert_one_line_error(
        run(app, "schedule", str(folder), "--reschedule"),
        "test-sale: a wave has started; cancel it and schedule a new slug instead",
    )
    assert campaign_row(runtime).content_hash == edited


BROKEN = [
    pytest.param(
        TOML.replace('topic = "newsletter"', 'topic = "nope"'),
        MJML,
        "campaign.toml:4:9: unknown topic 'nope' (known: newsletter, early-access, product-news)",
        id="unknown-topic",
    ),
    pytest.param(
        TOML,
        MJML.replace("subscriber.first_name", "subscriber.shoe_size"),
        "email.mjml:5:23: 'dict object' has no attribute 'shoe_size'",
        id="unknown-variable",
    ),
    pytest.param(
        TOML.replace("2030-01-07T10:00:00+01:00", "2030-01-07T10:00:00"),
        MJML,
        re.compile(r"campaign\.toml:5:11: .*offset.*"),
        id="time-without-offset",
    ),
]


@pytest.mark.parametrize("toml, mjml, problem", BROKEN)
@pytest.mark.parametrize("command", ["schedule", "plan"])
def test_a_broken_folder_is_one_line_and_writes_nothing(app, runtime, tmp_path, command, toml, mjml, problem):
    folder = write_files(tmp_path, toml, mjml, slug="broken")
    result = run(app, command, str(folder))
    if isinstance(problem, str):
        assert_one_line_error(result, f"{folder}/{problem}")
    else:
        assert_one_line_error(result, re.compile(re.escape(f"Error: {folder}/") + problem.pattern))
    assert count_campaigns(runtime) == 0
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0


@pytest.mark.parametrize(
    "toml, mjml",
    [
        ("\x00\x01\x02", MJML),
        ('name = [1, 2\nsubject = """', MJML),
        (TOML, "{% extends 'missing.mjml' %}"),
        (TOML, "{% include '../../../etc/passwd' %}"),
        (TOML, "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
        (TOML, "{% for x in range(10**9) %}{% endfor %}"),
        (TOML.replace("send_at", "[[wave]]\nsend_at"), MJML),
    ],
)
def test_hostile_folders_are_problems_with_positions_never_tracebacks(app, runtime, tmp_path, toml, mjml):
    folder = write_files(tmp_path, toml, mjml, slug="hostile")
    position = re.compile(re.escape(f"{folder}/") + r"(campaign\.toml|email\.mjml):\d+:\d+: \S.*")
    for command in ("schedule", "plan"):
        result = run(app, command, str(folder))
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output
        problems = lines(result)
        assert problems[0].startswith("Error: ")
        problems[0] = problems[0].removeprefix("Error: ")
        assert all(position.fullmatch(p) for p in problems), problems  # one line per problem
    assert count_campaigns(runtime) == 0


def test_schedule_and_plan_of_a_missing_folder(app, tmp_path):
    for command in ("schedule", "plan"):
        assert_one_line_error(
            run(app, command, str(tmp_path / "nowhere")), f"{tmp_path / 'nowhere'}: no such campaign folder"
        )


def test_a_cancelled_campaign_is_scheduled_again_only_with_reschedule_and_before_any_wave(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("c@example.com", topics=("newsletter",))
    start = now_floor()
    folder = write_campaign(
        tmp_path, slug="again", topic="newsletter", waves=[("all", "all", start + timedelta(hours=1))]
    )
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "cancel", str(folder)).exit_code == 0
    assert_one_line_error(
        run(app, "schedule", str(folder)),
        "again is cancelled; use --reschedule to schedule it again (only if no wave started)",
    )
    assert campaign_row(runtime, "again").status == CampaignStatus.CANCELLED
    again = run(app, "schedule", str(folder), "--reschedule")
    assert again.exit_code == 0, again.output
    assert lines(again)[0].startswith("again: scheduled, content ")
    assert campaign_row(runtime, "again").status == CampaignStatus.SCHEDULED

    # Started, then cancelled: the slug is spent.
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()  # the wave starts; its batch is queued
    assert lines(run(app, "cancel", str(folder))) == ["again cancelled: nothing more will be sent"]
    work()  # the batch finds the campaign cancelled and sends nothing
    assert smtp_sink.take() == []
    assert [(r.state, r.reason) for r in rows(runtime, "again")] == [
        (DeliveryState.SKIPPED, "campaign cancelled")
    ]
    assert_one_line_error(
        run(app, "schedule", str(folder), "--reschedule"),
        "again: a wave has started; cancel it and schedule a new slug instead",
    )


# --- plan ----------------------------------------------------------------------------------------


def test_plan_counts_every_outcome_for_a_folder_and_for_a_scheduled_campaign(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)  # the engine sends the earlier campaign without caps or quiet hours
    runtime = app.extensions["newsletter"]
    for email in ("v0@example.com", "v1@example.com"):
        make_subscriber(email, topics=("early-access",))
    for name in ("plain", "suppressed", "tokyo", "paused", "paused-long"):
        make_subscriber(f"{name}@example.com", topics=("early-access",))
    for name in ("capped", "weekly"):
        make_subscriber(f"{name}@example.com", topics=("early-access", "newsletter"))

    # This minute's newsletter goes to capped@ and weekly@ (a real send, in the ledger).
    monthly = write_campaign(
        tmp_path, slug="monthly", topic="newsletter", waves=[("all", "all", now_floor())]
    )
    assert run(app, "schedule", str(monthly)).exit_code == 0
    assert run(app, "send", str(monthly), "--now").exit_code == 0
    tick()
    work()
    assert sorted(recipients(smtp_sink.take())) == ["capped@example.com", "weekly@example.com"]
    sent_at = max(r.sent_at for r in rows(runtime, "monthly"))

    # The sale: VIPs tomorrow at 12:00 UTC, everyone two hours later, public a day after the VIPs.
    vip_at = clock.now().replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=1)
    all_at, public_at = vip_at + timedelta(hours=2), vip_at + timedelta(days=1)
    # A store-wide cap that lets capped@ be mailed again 6-7 hours after the second wave starts.
    window = math.ceil((all_at + timedelta(hours=4) - sent_at).total_seconds() / 3600)
    settings = {"MARKETING_CAPS": f"1/{window}h", "QUIET_HOURS": "21:00-08:00"}
    with runtime.sessions() as session:
        for email in ("v0@example.com", "v1@example.com"):
            add_customer(session, email, tier="vip", orders_count=4, lifetime_value=Decimal("700"))
        by_email = {s.email: s for s in session.scalars(select(Subscriber))}
        suppression.suppress(
            session, by_email["suppressed@example.com"].email_hash, SuppressionReason.MANUAL, "test", ""
        )
        changes = {
            "tokyo@example.com": {"time_zone": "Asia/Tokyo"},  # 14:00 UTC is 23:00 there: until 08:00
            "paused@example.com": {"paused_until": all_at + timedelta(hours=4)},
            "paused-long@example.com": {"paused_until": public_at + timedelta(days=2)},
            "weekly@example.com": {"frequency": "weekly"},  # next allowed in 7 days: after public_at
        }
        for email, values in changes.items():
            session.execute(update(Subscriber).where(Subscriber.email == email).values(**values))
        session.commit()
    sale = write_campaign(
        tmp_path,
        waves=[("vip", 'tier == "vip"', vip_at), ("everyone", "all", all_at)],
        public_at=public_at,
    )
    expected_text = [
        f"wave vip at {at(vip_at)} UTC: 2 in the audience",
        "  0 suppressed, 2 sent at the start",
        f"wave everyone at {at(all_at)} UTC: 7 in the audience",
        "  1 suppressed, 1 sent at the start",
        "  1 deferred (frequency cap), sent later before the deadline",
        "  1 deferred (paused), sent later before the deadline",
        "  1 deferred (quiet hours), sent later before the deadline",
        "  1 skipped (frequency cap): the deadline comes first",
        "  1 skipped (paused): the deadline comes first",
    ]
    expected_json = [
        {
            "name": "vip",
            "send_at": vip_at.isoformat() + "Z",
            "audience": 2,
            "suppressed": 0,
            "now": 2,
            "deferred": {},
            "skipped": {},
        },
        {
            "name": "everyone",
            "send_at": all_at.isoformat() + "Z",
            "audience": 7,
            "suppressed": 1,
            "now": 1,
            "deferred": {"quiet hours": 1, "paused": 1, "frequency cap": 1},
            "skipped": {"paused": 1, "frequency cap": 1},
        },
    ]

    # An unscheduled folder, then the same campaign once scheduled: the same answer.
    for scheduled in (False, True):
        if scheduled:
            assert run(app, "schedule", str(sale), **settings).exit_code == 0
        text = run(app, "plan", str(sale), **settings)
        assert text.exit_code == 0, text.output
        assert lines(text) == expected_text
        as_json = run(app, "plan", str(sale), "--json", **settings)
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.output) == {"waves": expected_json, "reward_codes": None}

    # Planning sent nothing and wrote nothing.
    assert rows(runtime, "test-sale") == []
    assert campaign_row(runtime).status == CampaignStatus.SCHEDULED
    tick()
    work()
    assert smtp_sink.take() == []

    # Then the engine, under the same rules, does what the plan said.
    engine_app = make_app(**settings)  # the workers' runtime from now on
    engine = engine_app.extensions["newsletter"]
    clock.travel(vip_at - clock.now() + timedelta(minutes=1))
    run_engine(engine, work)
    assert sorted(recipients(smtp_sink.take())) == ["v0@example.com", "v1@example.com"]
    # Once the VIP wave has gone, the plan of the scheduled campaign is the second wave alone.
    rest = run(engine_app, "plan", str(sale), "--json", **settings)
    assert json.loads(rest.output) == {"waves": expected_json[1:], "reward_codes": None}

    clock.travel(all_at - clock.now() + timedelta(minutes=1))
    run_engine(engine, work)
    assert recipients(smtp_sink.take()) == {"plain@example.com": 1}
    outcome = [(r.state.value, r.reason) for r in rows(runtime, "test-sale")]
    ledger = Counter((r.state.value, (r.reason or "").split(":")[0]) for r in rows(runtime, "test-sale"))
    assert ledger == {
        ("sent", ""): 3,
        ("skipped", "suppressed"): 1,
        ("deferred", "quiet hours"): 1,
        ("deferred", "paused"): 1,
        ("deferred", "frequency cap"): 1,
        ("skipped", "paused"): 1,
        ("skipped", "frequency cap"): 1,
    }, outcome
    # ... and the deferred ones go out before the deadline.
    clock.travel(public_at - clock.now() - timedelta(minutes=5))
    run_engine(engine, work)
    assert sorted(recipients(smtp_sink.take())) == [
        "capped@example.com",
        "paused@example.com",
        "tokyo@example.com",
    ]
    assert Counter(r.state.value for r in rows(runtime, "test-sale")) == {"sent": 6, "skipped": 3}
    # Every wave has started: nothing left to plan, and the plan says so.
    done = run(engine_app, "plan", str(sale), **settings)
    assert done.exit_code == 0, done.output
    assert lines(done) == ["test-sale: every wave has started; nothing left to plan (see `campaign status`)"]
    assert json.loads(run(engine_app, "plan", str(sale), "--json", **settings).output) == {
        "waves": [],
        "reward_codes": None,
    }


# --- send, pause, resume, cancel ---------------------------------------------------------------------


def test_send_now_pause_resume_cancel_and_what_is_not_applicable(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"w{i}@example.com", topics=("newsletter",))
    start = now_floor()
    folder = write_campaign(
        tmp_path,
        slug="news",
        topic="newsletter",
        waves=[("first", "all", start + timedelta(days=1)), ("second", "all", start + timedelta(days=2))],
    )
    assert run(app, "schedule", str(folder)).exit_code == 0

    # Before its time nothing starts; `send --now` starts the next waiting wave at the next tick.
    tick()
    work()
    assert smtp_sink.take() == [] and rows(runtime, "news") == []
    first_at = campaign_row(runtime, "news").waves[0].send_at
    assert_one_line_error(
        run(app, "send", str(folder)),  # without --now it says what it would do, and how
        "nothing sent: scheduled waves start by themselves at their send_at; 'send --now' would start "
        f"wave 'first' at the next tick instead of {first_at:%Y-%m-%d %H:%M} UTC. "
        f"Run: newsletter campaign send {folder} --now",
    )
    assert rows(runtime, "news") == []
    now = run(app, "send", str(folder), "--now")
    assert now.exit_code == 0, now.output
    assert lines(now) == ["news: wave 'first' starts at the next tick"]
    assert rows(runtime, "news") == []  # nothing until the tick
    tick()
    work()
    assert len(recipients(smtp_sink.take())) == 3
    waves = {w.name: w for w in campaign_row(runtime, "news").waves}
    assert waves["first"].started_at is not None and waves["second"].started_at is None

    # Pause: the campaign stops; resume of a paused campaign carries on; pause twice is refused.
    paused = run(app, "pause", "news")  # a slug works as well as a path
    assert paused.exit_code == 0, paused.output
    assert lines(paused) == ["news paused: workers stop at their next message"]
    assert campaign_row(runtime, "news").status == CampaignStatus.PAUSED
    assert_one_line_error(run(app, "pause", str(folder)), "news is paused; nothing to pause")
    assert lines(run(app, "status", str(folder)))[0] == "news: paused (paused by an operator)"
    assert_one_line_error(run(app, "send", str(folder), "--now"), "news: no waiting wave to start (paused)")
    resumed = run(app, "resume", str(folder))
    assert resumed.exit_code == 0, resumed.output
    assert lines(resumed) == [
        "news resumed: the work is rebuilt from the delivery ledger",
        "0 batches enqueued; 0 rows taken back from dead workers",
    ]
    assert campaign_row(runtime, "news").status == CampaignStatus.SENDING

    # Cancel: the second wave never starts; everything after is refused in one line.
    cancelled = run(app, "cancel", str(folder))
    assert cancelled.exit_code == 0, cancelled.output
    assert lines(cancelled) == ["news cancelled: nothing more will be sent"]
    clock.travel(timedelta(days=3))
    tick()
    work()
    assert smtp_sink.take() == []
    assert len(rows(runtime, "news")) == 3
    assert_one_line_error(run(app, "cancel", str(folder)), "news is already cancelled")
    assert_one_line_error(
        run(app, "resume", str(folder)), "news is cancelled; only a paused campaign resumes"
    )
    assert_one_line_error(run(app, "pause", str(folder)), "news is cancelled; nothing to pause")
    assert_one_line_error(
        run(app, "send", str(folder), "--now"), "news: no waiting wave to start (cancelled)"
    )


def test_resume_pause_and_send_of_a_done_campaign_fail(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("d@example.com", topics=("newsletter",))
    folder = write_campaign(tmp_path, slug="done", topic="newsletter", waves=[("all", "all", now_floor())])
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()
    work()
    tick()
    assert len(smtp_sink.take()) == 1
    assert campaign_row(runtime, "done").status == CampaignStatus.DONE
    assert_one_line_error(run(app, "resume", str(folder)), "done is done; only a paused campaign resumes")
    assert_one_line_error(run(app, "pause", str(folder)), "done is done; nothing to pause")
    assert_one_line_error(run(app, "cancel", str(folder)), "done is already done")
    assert_one_line_error(run(app, "send", str(folder), "--now"), "done: no waiting wave to start (done)")


def test_plan_of_a_cancelled_campaign_says_nothing_will_be_sent(app, runtime, tmp_path):
    folder = write_campaign(tmp_path, slug="gone", topic="newsletter", waves=[("all", "all", now_floor())])
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "cancel", str(folder)).exit_code == 0
    result = run(app, "plan", str(folder))
    assert result.exit_code == 0 and lines(result) == [
        "gone is cancelled: nothing will be sent (see `campaign status`)"
    ]
    as_json = run(app, "plan", str(folder), "--json")  # JSON asked for, JSON answered
    assert json.loads(as_json.output) == {"cancelled": True, "waves": [], "reward_codes": None}


@pytest.mark.parametrize(
    "args",
    [["send", "{}", "--now"], ["pause", "{}"], ["resume", "{}"], ["cancel", "{}"], ["status", "{}"]],
    ids=lambda a: a[0],
)
def test_any_control_on_an_unscheduled_campaign_fails_in_one_line(app, runtime, tmp_path, args):
    folder = write_campaign(tmp_path, slug="draft", topic="newsletter", waves=[("all", "all", now_floor())])
    for target in (str(folder), "draft"):
        result = run(app, *[a.format(target) for a in args])
        assert_one_line_error(result, "draft: not scheduled (run `newsletter campaign schedule`)")
    assert count_campaigns(runtime) == 0


# --- status ----------------------------------------------------------------------------------------


def test_status_counts_states_reasons_and_redemptions_per_wave(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="21:00-08:00")
    runtime = app.extensions["newsletter"]
    for name in ("vip", "vip-night", "vip-gone", "reg"):
        make_subscriber(f"{name}@example.com", topics=("early-access",))
    with runtime.sessions() as session:
        for name in ("vip", "vip-night", "vip-gone"):
            add_customer(
                session, f"{name}@example.com", tier="vip", orders_count=2, lifetime_value=Decimal(9)
            )
        # everyone else in a zone where it is day now: the test must not depend on the hour it runs at
        session.execute(update(Subscriber).values(time_zone=day_zone()))
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == "vip-night@example.com")
            .values(time_zone=night_zone())
        )
        gone = session.scalar(select(Subscriber).where(Subscriber.email == "vip-gone@example.com"))
        suppression.suppress(session, gone.email_hash, SuppressionReason.MANUAL, "test", "")
        session.commit()
    start = now_floor()
    folder = write_campaign(
        tmp_path,
        waves=[
            ("vip", 'tier == "vip"', start + timedelta(hours=1)),
            ("everyone", "all", start + timedelta(days=1)),
        ],
        public_at=start + timedelta(days=2),
    )
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()
    work()
    [message] = smtp_sink.take()
    assert message["To"] == "vip@example.com"

    # vip@ follows the early-access link from the email (twice: one redemption).
    campaign = campaign_row(runtime)
    vip = next(r for r in rows(runtime, "test-sale") if r.state == DeliveryState.SENT)
    client = app.test_client()
    link = urlsplit(links.early_access_url(app.settings, _Who(vip.subscriber_id, runtime), campaign.id)).path
    for _ in range(2):
        assert client.get(link).status_code == 303

    waves = {w.name: w for w in campaign.waves}
    expected = [
        "test-sale: sending",
        f"  wave vip (sending, starts {waves['vip'].send_at.isoformat()}Z): "
        "1 deferred, 1 sent, 1 skipped, 1 early-access redemptions",
        "    1 deferred: quiet hours",
        "    1 skipped: suppressed",
        f"  wave everyone (waiting, starts {waves['everyone'].send_at.isoformat()}Z): nobody yet",
    ]
    status = run(app, "status", str(folder))
    assert status.exit_code == 0, status.output
    assert lines(status) == expected

    as_json = run(app, "status", "test-sale", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == {
        "campaign": "test-sale",
        "status": "sending",
        "pause_reason": None,
        "waves": {
            "vip": {
                "status": "sending",
                "send_at": waves["vip"].send_at.isoformat() + "Z",
                "states": {"sent": 1, "deferred": 1, "skipped": 1},
                "reasons": {"deferred: quiet hours": 1, "skipped: suppressed": 1},
                "redemptions": 1,
            },
            "everyone": {
                "status": "waiting",
                "send_at": waves["everyone"].send_at.isoformat() + "Z",
                "states": {},
                "reasons": {},
                "redemptions": 0,
            },
        },
    }


def test_status_groups_skips_past_the_deadline_whatever_each_persons_next_allowed_time(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    start = now_floor()
    public_at = start + timedelta(days=1)
    make_subscriber("here@example.com", topics=("early-access",))
    for days in (2, 3, 4):
        make_subscriber(f"away{days}@example.com", topics=("early-access",))
        with runtime.sessions() as session:
            session.execute(
                update(Subscriber)
                .where(Subscriber.email == f"away{days}@example.com")
                .values(paused_until=start + timedelta(days=days))
            )
            session.commit()
    folder = write_campaign(tmp_path, slug="grouped", waves=[("all", "all", start)], public_at=public_at)
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "send", str(folder), "--now").exit_code == 0
    run_engine(runtime, work)
    assert recipients(smtp_sink.take()) == {"here@example.com": 1}
    # the ledger keeps each person's own reason ...
    reasons = sorted(r.reason for r in rows(runtime, "grouped") if r.state == DeliveryState.SKIPPED)
    assert reasons == [
        f"paused: next allowed {start + timedelta(days=d):%Y-%m-%d %H:%M} UTC, after the deadline"
        for d in (2, 3, 4)
    ]
    # ... and status counts them as one reason, not one line per minute.
    status = run(app, "status", str(folder))
    assert status.exit_code == 0, status.output
    assert lines(status)[0] == "grouped: done"
    assert re.fullmatch(r"  wave all \(done, starts [-0-9T:.]+Z\): 1 sent, 3 skipped", lines(status)[1])
    assert lines(status)[2:] == ["    3 skipped: paused, next allowed after the deadline"]
    data = json.loads(run(app, "status", str(folder), "--json").output)
    assert data["waves"]["all"]["reasons"] == {"skipped: paused, next allowed after the deadline": 3}


class _Who:
    """What links need of a subscriber: the id and the address hash."""

    def __init__(self, subscriber_id: int, runtime):
        with runtime.sessions() as session:
            self.id = subscriber_id
            self.email_hash = session.get(Subscriber, subscriber_id).email_hash


def test_status_follow_ends_when_the_campaign_is_done_and_shows_the_final_counts(
    make_app, make_subscriber, smtp_sink, work, tmp_path, monkeypatch
):
    app = make_app(**NO_CAPS, BATCH_SIZE="2")
    runtime = app.extensions["newsletter"]
    for i in range(5):
        make_subscriber(f"f{i}@example.com", topics=("newsletter",))
    folder = write_campaign(tmp_path, slug="follow", topic="newsletter", waves=[("all", "all", now_floor())])
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()  # the wave starts: five rows queued, three batches enqueued
    assert campaign_row(runtime, "follow").status == CampaignStatus.SENDING

    # The command builds its own app (and runtime) in the follower thread; work() below hands the
    # test's runtime to the jobs, and tick() after it runs on that too.
    reads = []
    first_read = threading.Event()
    original = scheduling.progress

    def progress(session, campaign):
        reads.append(original(session, campaign)["status"])
        first_read.set()
        return original(session, campaign)

    monkeypatch.setattr(scheduling, "progress", progress)
    results = []
    follower = threading.Thread(
        target=lambda: results.append(run(app, "status", str(folder), "--follow", "--interval", "0.05")),
        daemon=True,  # a follower that never stops fails this test, not the whole run
    )
    follower.start()
    try:
        # The bounds only end a broken run: on a busy machine building the command's app alone
        # can take many seconds, so wait for what happened, not for a time.
        assert first_read.wait(timeout=FOLLOW_BOUND), "--follow never read the campaign's status"
        work()  # the engine sends while the operator watches
        tick()  # ... and the next tick marks the campaign done
        assert campaign_row(runtime, "follow").status == CampaignStatus.DONE
    finally:
        follower.join(timeout=FOLLOW_BOUND)
    assert not follower.is_alive(), "--follow did not stop when the campaign was done"
    [result] = results
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        "follow: done",
        f"  wave all (done, starts {campaign_row(runtime, 'follow').waves[0].send_at.isoformat()}Z): 5 sent",
    ]
    # piped: one plain line per change, no carriage returns, never 100% before the end
    progress = result.stderr.splitlines()
    assert "\r" not in result.stderr and progress[-1] == "follow: done | all 5/5 (100%)"
    between = r"follow: sending \| all (starting|[0-5]/5 \(\d+%\))"
    assert all(re.fullmatch(between, line) for line in progress[:-1]), progress
    assert reads[0] == "sending" and reads[-1] == "done"  # it watched the send, then stopped
    assert len(recipients(smtp_sink.take())) == 5


def test_status_follow_refuses_an_interval_that_is_not_positive(app, tmp_path):
    result = run(app, "status", "anything", "--follow", "--interval", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--interval'" in result.output


def test_status_follow_of_a_finished_campaign_returns_at_once(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("z@example.com", topics=("newsletter",))
    folder = write_campaign(tmp_path, slug="over", topic="newsletter", waves=[("all", "all", now_floor())])
    assert run(app, "schedule", str(folder)).exit_code == 0
    assert run(app, "send", str(folder), "--now").exit_code == 0
    tick()
    work()
    tick()
    assert len(smtp_sink.take()) == 1
    result = run(app, "status", str(folder), "--follow", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[0] == "over: done"
    assert result.stdout.strip().splitlines()[1].endswith("): 1 sent")
    assert campaign_row(runtime, "over").status == CampaignStatus.DONE


def test_status_follow_shows_each_wave_and_a_waiting_wave_is_not_done():
    from newsletter.campaigns.control_cli import _progress_line

    data = {
        "campaign": "sale",
        "status": "sending",
        "waves": {
            "vip": {"status": "done", "send_at": "2030-01-01T09:00:00Z", "states": {"sent": 3}},
            "everyone": {"status": "waiting", "send_at": "2030-01-02T09:00:00Z", "states": {}},
            "late": {
                "status": "sending",
                "send_at": "2030-01-03T09:00:00Z",
                "states": {"sent": 999, "queued": 1},
            },
        },
    }
    assert _progress_line(data) == (
        "sale: sending | vip 3/3 (100%) | everyone waiting (starts 2030-01-02T09:00:00Z) | "
        "late 999/1000 (99%)"
    )
