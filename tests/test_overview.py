"""The dashboard's overview numbers: list growth per day from the consent ledger (the rollup caught up
incrementally equals a full recount; erasures counted; days cut at UTC midnight of the engine's clock)
and the deliverability rates of the last 30 days against the limits."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update

from newsletter.core import clock
from newsletter.feedback.health import health
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import (
    ConsentAction,
    ConsentDay,
    ConsentEvent,
    Delivery,
    Role,
    RollupMark,
    SignalKind,
    Subscriber,
    Suppression,
    SuppressionReason,
    TallyChange,
)
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import data_rights, growth, preferences, suppression
from newsletter.subscribers.consent import RequestInfo, record_event
from tests.conftest import confirm_link, csrf_token
from tests.feedback_helpers import send_campaign
from tests.test_admin import add, sign_in

OPERATOR = RequestInfo(None, None, "test")


def travel_to(moment: datetime) -> None:
    clock.travel(moment - clock.now())


def join(client, signup, work, smtp_sink, email: str, topics=("newsletter",), confirm: bool = True) -> None:
    """A signup through the form, and (if ``confirm``) the click on the link it mailed."""
    assert signup(email, topics=topics).status_code in (200, 302, 303)
    work()
    [message] = smtp_sink.take()
    if confirm:
        link = confirm_link(message).replace("https://newsletter.test", "")
        answer = client.post(link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))})
        assert answer.status_code in (200, 302, 303)
        work()
        smtp_sink.take()  # the welcome


def subscriber(runtime, email: str) -> Subscriber:
    with runtime.sessions() as session:
        return session.scalar(select(Subscriber).where(Subscriber.email == email))


def act(runtime, email: str, action) -> None:
    with runtime.sessions() as session:
        found = session.scalar(select(Subscriber).where(Subscriber.email == email))
        action(session, found)
        session.commit()


def rollup(runtime) -> dict:
    with runtime.sessions() as session:
        return {(r.day, r.kind): r.n for r in session.scalars(select(ConsentDay))}


def numbers(runtime, days: int = 30) -> growth.Growth:
    with runtime.sessions() as session:
        return growth.growth(session, clock.now().date(), days)


def caught_up(runtime) -> int:
    with runtime.sessions() as session:
        added = growth.catch_up(session)
        session.commit()
        return added


def test_growth_per_day_caught_up_incrementally_equals_a_recount(runtime, client, signup, work, smtp_sink):
    day_one = datetime.combine(clock.now().date() - timedelta(days=3), datetime.min.time())
    travel_to(day_one + timedelta(hours=23, minutes=58))  # the last minutes of a UTC day
    join(client, signup, work, smtp_sink, "ann@example.com", topics=("newsletter", "early-access"))
    join(client, signup, work, smtp_sink, "bob@example.com")
    join(client, signup, work, smtp_sink, "cat@example.com", confirm=False)
    assert caught_up(runtime) == 5  # three signups, two confirmations: counted once, now
    assert caught_up(runtime) == 0

    travel_to(day_one + timedelta(days=1, seconds=1))  # just past midnight: the next day
    act(
        runtime, "ann@example.com", lambda s, p: preferences.unsubscribe(s, p, OPERATOR, topic="early-access")
    )
    act(runtime, "bob@example.com", lambda s, p: preferences.unsubscribe(s, p, OPERATOR))
    shown = numbers(runtime)  # not caught up: the tail above the mark is counted live
    assert caught_up(runtime) == 2

    travel_to(day_one + timedelta(days=2, hours=12))
    act(runtime, "bob@example.com", lambda s, p: data_rights.erase(s, p, OPERATOR))
    act(runtime, "cat@example.com", lambda s, p: data_rights.erase(s, p, OPERATOR))
    join(client, signup, work, smtp_sink, "dan@example.com")

    grown = numbers(runtime)
    assert grown.days[-1] == clock.now().date() and len(grown.days) == 30
    by_day = {d: {name: values[i] for name, values in grown.series.items()} for i, d in enumerate(grown.days)}
    first, second, third = (day_one.date() + timedelta(days=i) for i in range(3))
    assert by_day[first] == {"signups": 3, "confirmations": 2, "unsubscribes": 0, "erasures": 0}
    assert by_day[second] == {"signups": 0, "confirmations": 0, "unsubscribes": 1, "erasures": 0}
    assert grown.left_a_topic[grown.days.index(second)] == 1
    # the erased people's events stay in the ledger, pseudonymised; each erasure is one event
    assert by_day[third] == {"signups": 1, "confirmations": 1, "unsubscribes": 0, "erasures": 2}
    assert sum(grown.series["erasures"]) == 2 and grown.total("signups") == 4
    assert {d: v for d, v in by_day.items() if d not in (first, second, third)} == {
        d: dict.fromkeys(growth.SERIES, 0) for d in grown.days if d not in (first, second, third)
    }
    assert shown.series["unsubscribes"][shown.days.index(second)] == 1  # the live tail, above the mark

    assert caught_up(runtime) == 4
    incremental = rollup(runtime)
    with runtime.sessions() as session:
        growth.recount(session)
        session.commit()
        assert session.scalar(select(ConsentEvent.id).order_by(ConsentEvent.id.desc()).limit(1))
    assert rollup(runtime) == incremental
    assert numbers(runtime) == grown

    with runtime.sessions() as session:
        totals = growth.totals(session)
    assert (totals.confirmed, totals.pending, totals.unsubscribed, totals.erased) == (2, 0, 0, 2)
    assert totals.suppressed == 2  # the erased addresses' hashes (bob's unsubscribe became erased)


def test_the_window_ends_today_and_starts_days_minus_one_before(runtime, client, signup, work, smtp_sink):
    today = clock.now().date()
    travel_to(datetime.combine(today - timedelta(days=30), datetime.min.time()) + timedelta(hours=23))
    join(client, signup, work, smtp_sink, "old@example.com", confirm=False)  # 30 days ago: outside 30
    travel_to(datetime.combine(today - timedelta(days=29), datetime.min.time()))
    join(client, signup, work, smtp_sink, "edge@example.com", confirm=False)  # 29 days ago: inside
    travel_to(datetime.combine(today, datetime.min.time()) + timedelta(hours=1))

    thirty, ninety = numbers(runtime, 30), numbers(runtime, 90)
    assert thirty.days[0] == today - timedelta(days=29) and thirty.series["signups"][0] == 1
    assert thirty.total("signups") == 1 and ninety.total("signups") == 2 and len(ninety.days) == 90
    caught_up(runtime)
    assert numbers(runtime, 30) == thirty


def test_an_import_counts_on_the_day_of_its_consent(runtime):
    # imports date the evidence when the person consented: the rollup files it under that day,
    # whatever order the ids came in
    with runtime.sessions() as session:
        person = Subscriber(email="imp@example.com", email_hash="imp", status="active")
        session.add(person)
        session.flush()
        event = record_event(session, person.id, ConsentAction.IMPORTED, OPERATOR)
        event.occurred_at = clock.now() - timedelta(days=10)
        session.commit()
    caught_up(runtime)
    grown = numbers(runtime)
    ten_ago = grown.days.index(clock.now().date() - timedelta(days=10))
    assert grown.series["signups"][ten_ago] == 1 and grown.series["confirmations"][ten_ago] == 1


def test_deliverability_of_the_last_30_days_against_the_limits(
    make_app, tmp_path, make_subscriber, smtp_sink, work
):
    app = make_app(BOUNCE_ADDRESS="bounces@store.example", MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    addresses = [f"p{i}@example.com" for i in range(20)]
    sent = send_campaign(runtime, make_subscriber, smtp_sink, work, tmp_path, addresses)
    with runtime.sessions() as session:
        for address, kind in ((addresses[0], SignalKind.BOUNCE_HARD), (addresses[1], SignalKind.COMPLAINT)):
            signal = Signal(kind, source="test", verp=sent[address].ref, provider_event_id=address)
            record(session, app.settings, signal)
        session.commit()

    with runtime.sessions() as session:
        now = health(session, app.settings, clock.now().date())
        later = health(session, app.settings, clock.now().date() + timedelta(days=31))
    assert len(now.campaigns) == 1 and now.campaigns[0].delivered == 20
    assert (now.bounce.count, now.bounce.delivered, now.bounce.limit) == (1, 20, app.settings.max_bounce_rate)
    assert now.bounce.value == 0.05 and not now.bounce.over  # 5%: at the limit, not past it
    assert now.complaint.count == 1 and now.complaint.over  # 5% > 0.3%
    assert sum(now.bounces_per_day) == 1 and now.complaints_per_day[-1] == 1
    assert later.campaigns == [] and later.bounce.value is None


def test_the_page_shows_the_numbers_and_refuses_a_bad_window(app, client, runtime, signup, work, smtp_sink):
    join(client, signup, work, smtp_sink, "ann@example.com")
    add(runtime, "viewer@store.example", Role.VIEWER)
    sign_in(client, "viewer@store.example")
    assert client.get("/admin/").headers["Location"].endswith("/admin/overview")
    page = client.get("/admin/overview")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "<svg" in html and 'id="growth"' in html
    today = clock.now().date().isoformat()
    row = html.split(f'id="day-{today}"')[1].split("</tr>")[0]
    assert '"signups">1<' in row and '"confirmations">1<' in row
    assert client.get("/admin/overview?days=365").status_code == 200
    bad = client.get("/admin/overview?days=7")
    assert bad.status_code == 400 and "Show 30, 90 or 365 days" in bad.get_data(as_text=True)


def test_an_event_committed_late_is_never_skipped(runtime, database_url, make_subscriber):
    """PostgreSQL hands out ids before commit: id 8 may be visible while id 7 is still being written.
    The catch-up waits for the writers (or gives up and leaves it to the next request), so the mark
    never passes an event that is not counted yet."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: ids become visible in order")
    ann, bob = make_subscriber("ann@example.com"), make_subscriber("bob@example.com")
    slow = runtime.sessions()
    record_event(slow, ann.id, ConsentAction.UNSUBSCRIBED, OPERATOR, details={"scope": "everything"})
    slow.flush()  # id taken, not committed
    with runtime.sessions() as session:
        record_event(session, bob.id, ConsentAction.UNSUBSCRIBED, OPERATOR, details={"scope": "everything"})
        session.commit()
    assert caught_up(runtime) == 0  # the writer still holds the ledger: nothing is marked counted
    assert numbers(runtime).series["unsubscribes"][-1] == 1  # the committed one, counted live
    slow.commit()
    slow.close()
    assert caught_up(runtime) == 2
    assert numbers(runtime).series["unsubscribes"][-1] == 2


def counted(runtime) -> tuple[int, int, int, int, int]:
    """The totals as a full count of the tables would give them (the figures the tallies must equal)."""
    with runtime.sessions() as session:
        by_status = dict(
            session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
        )
        suppressed = session.scalar(select(func.count()).select_from(Suppression))
    return (*(by_status.get(s, 0) for s in ("active", "pending", "unsubscribed", "erased")), suppressed)


def tallied(runtime, fold: bool) -> tuple[int, int, int, int, int]:
    with runtime.sessions() as session:
        if fold:
            growth.fold_changes(session)
            session.commit()
        t = growth.totals(session)
    return (t.confirmed, t.pending, t.unsubscribed, t.erased, t.suppressed)


def test_the_tallies_equal_a_count_whatever_changed_the_rows(runtime, make_subscriber):
    make_subscriber("ann@example.com")
    make_subscriber("bob@example.com", status="pending")
    with runtime.sessions() as session:  # a Core bulk insert, as imports and partner exchanges do
        session.execute(
            insert(Subscriber),
            [{"email": f"p{i}@example.com", "email_hash": f"h{i}", "status": "pending"} for i in range(30)],
        )
        session.commit()
    assert tallied(runtime, fold=False) == counted(runtime) == (1, 31, 0, 0, 0)  # unfolded: added live
    assert tallied(runtime, fold=True) == counted(runtime)

    act(runtime, "ann@example.com", lambda s, p: preferences.unsubscribe(s, p, OPERATOR))  # + a suppression
    act(runtime, "bob@example.com", lambda s, p: data_rights.erase(s, p, OPERATOR))
    with runtime.sessions() as session:
        session.execute(update(Subscriber).where(Subscriber.email_hash.like("h1%")).values(status="active"))
        session.execute(update(Subscriber).where(Subscriber.email_hash == "h2").values(first_name="Al"))
        session.execute(delete(Subscriber).where(Subscriber.email_hash == "h3"))
        suppression.suppress(session, "f" * 64, SuppressionReason.MANUAL, "test")
        suppression.remove(session, address_hash("ann@example.com"))
        session.commit()
    assert tallied(runtime, fold=False) == counted(runtime) == (11, 18, 1, 1, 2)
    assert tallied(runtime, fold=True) == counted(runtime)
    assert tallied(runtime, fold=True) == counted(runtime)  # folding twice counts nothing twice
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TallyChange)) == 0


def test_the_delivered_counts_are_the_campaigns_own(make_app, tmp_path, make_subscriber, smtp_sink, work):
    """The rates' denominators come from the delivery tallies: equal to a count of the sent rows."""
    app = make_app(BOUNCE_ADDRESS="bounces@store.example", MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    send_campaign(runtime, make_subscriber, smtp_sink, work, tmp_path, ["a@example.com", "b@example.com"])
    with runtime.sessions() as session:
        shown = health(session, app.settings, clock.now().date())
        counted = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.state == "sent"))
    assert shown.campaigns[0].delivered == counted == 2


def test_a_workers_maintenance_run_catches_the_counts_up(runtime, client, signup, work, smtp_sink):
    """The backlog is counted by the worker, so a page view only ever counts a short tail."""
    from newsletter.worker import run_worker
    from tests.conftest import jobs_use

    join(client, signup, work, smtp_sink, "ann@example.com")
    join(client, signup, work, smtp_sink, "bob@example.com", confirm=False)
    with runtime.sessions() as session:
        top = session.scalar(select(func.max(ConsentEvent.id)))
        assert session.scalar(select(RollupMark.last_id)) is None  # nothing counted yet
    run_worker(jobs_use(runtime), burst=True)
    with runtime.sessions() as session:
        assert session.scalar(select(RollupMark.last_id)) == top
        assert session.scalar(select(func.count()).select_from(TallyChange)) == 0  # folded
    assert caught_up(runtime) == 0
    assert sum(numbers(runtime).series["signups"]) == 2
