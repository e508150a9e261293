"""The campaign state machine (campaigns/state.py): the table, the one function, its log, its races.

SQLite and PostgreSQL; the races use two real sessions in two threads, the second one waiting
on the first one's row lock (PostgreSQL) or write lock (SQLite).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from newsletter.campaigns import errors, scheduling, state
from newsletter.campaigns.ledger import BatchReport
from newsletter.core import clock
from newsletter.models import (
    Campaign,
    CampaignEvent,
    CampaignStatus,
    DeliveryState,
    WaveStatus,
)
from newsletter.models.campaigns import CampaignLogIsAppendOnly
from tests.sending_helpers import now_floor, recipients, rows, run_engine, write_campaign

S = CampaignStatus
LEGAL = [(a, b) for a, targets in state.TRANSITIONS.items() for b in targets]
ILLEGAL = [(a, b) for a, b in itertools.product(S, S) if b not in state.TRANSITIONS[a]]


@pytest.fixture
def scheduled(runtime, tmp_path):
    """A campaign scheduled from files, its first wave tomorrow; its id."""
    folder = write_campaign(
        tmp_path, topic="newsletter", waves=[("all", "all", now_floor() + timedelta(days=1))]
    )
    with runtime.sessions() as session:
        campaign = scheduling.schedule(session, runtime.settings, folder)
        session.commit()
        return campaign.id


def put(runtime, campaign_id: int, status: CampaignStatus) -> None:
    """Set a status behind the machine's back: the starting point of a case."""
    with runtime.sessions() as session:
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status=status))
        session.commit()


def events(runtime, campaign_id: int) -> list[tuple]:
    with runtime.sessions() as session:
        return [
            (e.from_status, e.to_status, e.reason, e.actor)
            for e in session.scalars(
                select(CampaignEvent)
                .where(CampaignEvent.campaign_id == campaign_id)
                .order_by(CampaignEvent.id)
            )
        ]


def status_of(runtime, campaign_id: int) -> CampaignStatus:
    with runtime.sessions() as session:
        return session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def test_the_table_names_every_status_and_only_done_and_cancelled_are_final():
    assert set(state.TRANSITIONS) == set(S)
    assert {s for s, targets in state.TRANSITIONS.items() if not targets} == {S.CANCELLED, S.DONE}
    assert all(s not in targets for s, targets in state.TRANSITIONS.items())  # no change is a change


def test_every_illegal_transition_is_refused_with_a_clear_error_and_writes_nothing(runtime, scheduled):
    before = events(runtime, scheduled)
    for current, to in ILLEGAL:
        put(runtime, scheduled, current)
        with runtime.sessions() as session:
            campaign = session.get(Campaign, scheduled)
            with pytest.raises(state.IllegalTransition) as refused:
                state.transition(session, campaign, to, reason="test", actor="test")
            session.commit()
        assert str(refused.value) == f"campaign test-sale: cannot go from {current.value} to {to.value}"
        assert (refused.value.current, refused.value.to) == (current, to)
        assert status_of(runtime, scheduled) == current
    assert events(runtime, scheduled) == before


def test_each_legal_transition_changes_the_status_and_logs_why_and_who(runtime, scheduled):
    for current, to in LEGAL:
        put(runtime, scheduled, current)
        with runtime.sessions() as session:
            campaign = session.get(Campaign, scheduled)
            left = state.transition(session, campaign, to, reason=f"case {current}->{to}", actor="tester")
            assert left == current and campaign.status == to  # the object follows the row
            session.commit()
        assert status_of(runtime, scheduled) == to
        assert events(runtime, scheduled)[-1] == (current, to, f"case {current}->{to}", "tester")
    assert len(events(runtime, scheduled)) == 1 + len(LEGAL)  # "scheduled", then one per change


def test_only_from_narrows_the_table(runtime, scheduled):
    """The auto-pause pauses only a campaign still sending, though a scheduled one may be paused."""
    with runtime.sessions() as session:
        with pytest.raises(state.IllegalTransition, match="cannot go from scheduled to paused"):
            state.transition(
                session,
                session.get(Campaign, scheduled),
                S.PAUSED,
                reason="x",
                actor="worker",
                only_from=[S.SENDING],
            )
    assert status_of(runtime, scheduled) == S.SCHEDULED


def test_the_log_is_append_only(runtime, scheduled):
    with runtime.sessions() as session:
        event = session.scalars(select(CampaignEvent)).first()
        event.reason = "rewritten"
        with pytest.raises(CampaignLogIsAppendOnly):
            session.flush()


def test_the_controls_log_who_and_why_and_refuse_what_the_table_refuses(runtime, scheduled, tmp_path):
    with runtime.sessions() as session:
        campaign = session.get(Campaign, scheduled)
        assert scheduling.pause(session, campaign).ok
        assert campaign.pause_reason == "paused by an operator"
        assert scheduling.resume(session, campaign).ok  # no wave started: back to scheduled
        assert scheduling.cancel(session, campaign).ok
        for control in (scheduling.pause, scheduling.resume, scheduling.cancel):
            assert not control(session, campaign).ok
        assert (
            scheduling.resume(session, campaign).message
            == "test-sale is cancelled; only a paused campaign resumes"
        )
        session.commit()
    assert events(runtime, scheduled) == [
        (None, S.SCHEDULED, "scheduled", "operator"),
        (S.SCHEDULED, S.PAUSED, "paused by an operator", "operator"),
        (S.PAUSED, S.SCHEDULED, "resumed by an operator", "operator"),
        (S.SCHEDULED, S.CANCELLED, "cancelled by an operator", "operator"),
    ]
    # a reschedule replaces the row; the slug's log keeps the old campaign's events
    folder = tmp_path / "test-sale"
    with runtime.sessions() as session:
        again = scheduling.schedule(session, runtime.settings, folder, reschedule=True)
        session.commit()
        log = [(e.campaign_id, e.to_status, e.reason) for e in state.history(session, "test-sale")]
    assert log[:4] == [
        (None, S.SCHEDULED, "scheduled"),
        (None, S.PAUSED, "paused by an operator"),
        (None, S.SCHEDULED, "resumed by an operator"),
        (None, S.CANCELLED, "cancelled by an operator"),
    ]
    assert log[4:] == [(again.id, S.SCHEDULED, "rescheduled after a cancel")]


def test_the_engine_logs_a_wave_starting_and_the_campaign_finishing(
    make_app, make_subscriber, work, smtp_sink, tmp_path
):
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    make_subscriber("one@example.com", topics=("newsletter",))
    folder = write_campaign(
        tmp_path, topic="newsletter", waves=[("all", "all", now_floor() + timedelta(minutes=1))]
    )
    with runtime.sessions() as session:
        campaign_id = scheduling.schedule(session, runtime.settings, folder).id
        session.commit()
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    assert sorted(recipients(smtp_sink.take())) == ["one@example.com"]
    assert [(f, t, a) for f, t, _, a in events(runtime, campaign_id)] == [
        (None, S.SCHEDULED, "operator"),
        (S.SCHEDULED, S.SENDING, "tick"),
        (S.SENDING, S.DONE, "tick"),
    ]
    assert events(runtime, campaign_id)[1][2] == "wave 'all' started"


def _sending(runtime, campaign_id: int) -> None:
    with runtime.sessions() as session:
        state.transition(session, session.get(Campaign, campaign_id), S.SENDING, reason="test", actor="test")
        session.commit()


def _in_thread(target) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run():
        try:
            outcome.append(target())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_an_auto_pause_racing_a_cancel_loses_to_it(runtime, scheduled):
    """The cancel holds the row when the batch's error streak reaches the threshold: one winner."""
    _sending(runtime, scheduled)
    settings = replace(runtime.settings, pause_after_errors=1)
    worker = runtime.sessions()
    stale = worker.get(Campaign, scheduled)  # the batch read it as sending
    worker.commit()
    operator = runtime.sessions()
    assert scheduling.cancel(
        operator, operator.get(Campaign, scheduled)
    ).ok  # not committed yet: holds the row
    report = BatchReport()

    def auto_pause():
        stopped = errors.count_error(worker, settings, stale, "451 try later", report)
        worker.commit()
        return stopped

    thread, outcome = _in_thread(auto_pause)
    operator.commit()
    thread.join(timeout=60)
    operator.close()
    worker.close()
    assert outcome == [True] and report.stopped == "campaign cancelled"
    assert status_of(runtime, scheduled) == S.CANCELLED
    assert [(f, t) for f, t, _, _ in events(runtime, scheduled)][-1:] == [(S.SENDING, S.CANCELLED)]


def test_a_cancel_racing_an_auto_pause_cancels_the_paused_campaign(runtime, scheduled):
    """The auto-pause holds the row first: the cancel waits, sees it paused, and cancels from there."""
    _sending(runtime, scheduled)
    settings = replace(runtime.settings, pause_after_errors=1)
    worker = runtime.sessions()
    report = BatchReport()
    assert errors.count_error(worker, settings, worker.get(Campaign, scheduled), "451 try later", report)
    operator = runtime.sessions()
    stale = operator.get(Campaign, scheduled)

    def cancel():
        result = scheduling.cancel(operator, stale)
        operator.commit()
        return result.ok

    thread, outcome = _in_thread(cancel)
    worker.commit()
    thread.join(timeout=60)
    operator.close()
    worker.close()
    assert outcome == [True]
    assert status_of(runtime, scheduled) == S.CANCELLED
    log = events(runtime, scheduled)
    assert [(f, t, a) for f, t, _, a in log[-2:]] == [
        (S.SENDING, S.PAUSED, "worker"),
        (S.PAUSED, S.CANCELLED, "operator"),
    ]
    assert log[-2][2].startswith("paused itself after 1 consecutive send errors; last: 451 try later")


def test_a_pause_from_a_stale_read_does_not_undo_a_cancel(runtime, scheduled):
    """Before the state machine, pause() set the status it had read over whatever the row held."""
    _sending(runtime, scheduled)
    with runtime.sessions() as first, runtime.sessions() as second:
        stale = first.get(Campaign, scheduled)
        assert stale.status == S.SENDING
        first.commit()
        assert scheduling.cancel(second, second.get(Campaign, scheduled)).ok
        second.commit()
        result = scheduling.pause(first, stale)
        first.commit()
    assert (result.ok, result.message) == (False, "test-sale is cancelled; nothing to pause")
    assert status_of(runtime, scheduled) == S.CANCELLED


def test_finishing_does_not_overwrite_a_pause(runtime, scheduled):
    """The tick's finish_if_done read the campaign as sending; an operator paused it since."""
    _sending(runtime, scheduled)
    with runtime.sessions() as session:
        for wave in session.get(Campaign, scheduled).waves:
            assert state.move_wave(session, wave, WaveStatus.SENDING, started_at=clock.now())
        session.commit()
    with runtime.sessions() as tick, runtime.sessions() as operator:
        campaign = tick.get(Campaign, scheduled)
        assert campaign.status == S.SENDING and campaign.waves[0].status == WaveStatus.SENDING
        tick.commit()
        assert scheduling.pause(operator, operator.get(Campaign, scheduled)).ok
        operator.commit()
        assert state.finish_if_done(tick, campaign) is False
        tick.commit()
    assert status_of(runtime, scheduled) == S.PAUSED
    assert all(r.state != DeliveryState.SENT for r in rows(runtime))
