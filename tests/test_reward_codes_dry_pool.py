"""A pool smaller than the audience, three real workers, SIGKILLs: the campaign pauses dry, then resumes.

PostgreSQL, the real ``newsletter worker``, ``newsletter codes import`` and ``newsletter campaign
resume`` commands, the chaos relay of tests/test_sending_crash.py with the code recorder of
tests/test_reward_codes_crash.py. Kills are placed by the Nth message arriving, and each phase
ends on a state of the ledger (paused with nothing held; nothing left to send), never on a sleep.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from sqlalchemy import func, select

from newsletter.campaigns import scheduling
from newsletter.core import clock
from newsletter.models import (
    Campaign,
    CampaignEvent,
    CampaignStatus,
    Delivery,
    DeliveryState,
    RewardCode,
    Subscriber,
)
from tests import test_sending_crash as chaos
from tests.conftest import _free_port
from tests.sending_helpers import now_floor, start_faulty_smtp
from tests.test_reward_codes_crash import CodeRelay, load_codes, reward_campaign

#: small batches, so several are in flight at once and the pool runs dry in the middle of one
SETTINGS = {**chaos.SETTINGS, "BATCH_SIZE": "50"}
#: rows nobody holds: waiting, finished, or waiting for later
AT_REST = [
    DeliveryState.QUEUED,
    DeliveryState.SENT,
    DeliveryState.UNCERTAIN,
    DeliveryState.DEFERRED,
    DeliveryState.SKIPPED,
    DeliveryState.FAILED,
]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + chaos.RUN_SECONDS
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)  # polling a condition, bounded by the deadline
    assert condition(), what


def command(env: dict, *args: str) -> str:
    """Run ``newsletter ARGS`` as the operator would; its output."""
    done = subprocess.run([chaos.NEWSLETTER, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def check_codes(relay: CodeRelay) -> dict[str, str]:
    """Every message carried one code, no code reached two people, nobody got two: person -> code."""
    bad = [(r, c) for r, c in relay.codes if len(c) != 1]
    assert not bad, f"messages without exactly one code: {len(bad)} {bad[:3]}"
    people: dict[str, set[str]] = {}
    received: dict[str, set[str]] = {}
    for rcpt, codes in relay.codes:
        people.setdefault(next(iter(codes)), set()).add(rcpt)
        received.setdefault(rcpt, set()).update(codes)
    assert max(len(p) for p in people.values()) == 1, "one code went to two people"
    assert max(len(c) for c in received.values()) == 1, "somebody got two codes"
    return {rcpt: next(iter(codes)) for rcpt, codes in received.items()}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_dry_pool_pauses_under_sigkills_and_resumes_with_each_code_once(
    make_app, database_url, tmp_path, smtp_sink
):
    audience, first, more = 800, 300, 500  # exactly enough codes once the second file is in
    chaos.seed(database_url, {f"d{i}@example.com": ["newsletter"] for i in range(audience)})
    load_codes(database_url, "chaos", [f"A{i:05}" for i in range(first)])

    relay = CodeRelay([40, 120])  # in the first phase; at least 200 arrive before it runs dry
    port = _free_port()
    controller = start_faulty_smtp(port, relay)
    settings = {"SMTP_URL": f"smtp://127.0.0.1:{port}", **SETTINGS}
    app = make_app(**settings)
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        waves = [("all", "all", now_floor())]
        folder = reward_campaign(tmp_path, slug="gift", topic="newsletter", waves=waves)
        campaign = scheduling.schedule(session, runtime.settings, folder)
        assert scheduling.send_now(session, campaign, clock.now()).ok
        session.commit()
    env = chaos.worker_env(tmp_path, database_url, settings)

    def status() -> tuple[CampaignStatus, int, int]:
        """(campaign status, rows a worker holds, rows ready to send now)."""
        with runtime.sessions() as session:
            held = session.scalar(select(func.count()).where(Delivery.state.not_in(AT_REST)))
            ready = session.scalar(
                select(func.count()).where(
                    (Delivery.state == DeliveryState.QUEUED)
                    | ((Delivery.state == DeliveryState.DEFERRED) & (Delivery.send_after <= clock.now()))
                )
            )
            return session.scalar(select(Campaign.status)), held, ready

    workers = chaos.Workers(env, 3)
    relay.workers = workers
    try:
        # phase 1: the pool runs dry; paused, and every killed batch handed back
        wait_for(lambda: status()[:2] == (CampaignStatus.PAUSED, 0), "no dry-pool pause")
        assert relay.kills_at == [40, 120], "both kills fell inside the first phase"
        with runtime.sessions() as session:
            campaign = session.scalar(select(Campaign))
            assert campaign.pause_reason.startswith("reward pool chaos ran dry: ")
            assert "newsletter codes import" in campaign.pause_reason
            actors = session.scalars(
                select(CampaignEvent.actor).where(CampaignEvent.to_status == CampaignStatus.PAUSED)
            ).all()
            assert "rewards" in actors
            assigned = session.scalar(select(func.count(RewardCode.delivery_id)))
            mailed = session.scalar(
                select(func.count()).where(Delivery.state.in_([DeliveryState.SENT, DeliveryState.UNCERTAIN]))
            )
            waiting_without = session.scalar(
                select(func.count()).where(
                    Delivery.state == DeliveryState.QUEUED, Delivery.reward_code.is_(None)
                )
            )
        assert assigned == first, "the whole pool was handed out before the pause"
        assert mailed <= first and waiting_without == audience - first
        first_phase = check_codes(relay)
        assert len(first_phase) <= first

        # phase 2: the operator imports more codes and resumes; two more kills
        arrived = len(relay.codes)
        with relay.lock:
            relay.kill_at = {arrived + 100, arrived + 300}
            relay.planned = sorted(relay.kill_at)
        (tmp_path / "more.csv").write_text(
            "code\n" + "".join(f"B{i:05}\n" for i in range(more)), encoding="utf-8"
        )
        imported = command(env, "codes", "import", "chaos", str(tmp_path / "more.csv"))
        assert f"{more} added to pool chaos" in imported
        command(env, "campaign", "resume", "gift")
        wait_for(lambda: status() == (CampaignStatus.DONE, 0, 0), "the rest was not sent after the resume")
    finally:
        relay.workers = None
        workers.stop()
        controller.stop()

    assert relay.kills_at == [40, 120, *relay.planned], "every kill fell inside a send"
    received = check_codes(relay)
    with runtime.sessions() as session:
        ledger = dict(
            session.execute(
                select(Subscriber.email, Delivery.reward_code)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.state.in_([DeliveryState.SENT, DeliveryState.UNCERTAIN]))
            ).all()
        )
        uncertain = session.scalar(select(func.count()).where(Delivery.state == DeliveryState.UNCERTAIN))
        assigned = dict(
            session.execute(
                select(RewardCode.delivery_id, RewardCode.code).where(RewardCode.delivery_id.is_not(None))
            ).all()
        )
        carried = dict(session.execute(select(Delivery.id, Delivery.reward_code)).all())
    assert len(ledger) == audience and all(ledger.values()), "everyone mailed, each with a code"
    assert len(set(ledger.values())) == audience, "no code in two rows"
    assert len(assigned) == first + more and all(carried[d] == code for d, code in assigned.items())
    # the code a person received is the one the ledger holds for them, in either phase
    assert all(ledger[rcpt] == code for rcpt, code in received.items())
    assert all(received[rcpt] == code for rcpt, code in first_phase.items())
    # an uncertain row (inside a killed SMTP transaction) is not sent again
    assert uncertain <= workers.kills * runtime.settings.send_connections
    assert len(received) >= audience - uncertain
    print(f"kills at {relay.kills_at}, {len(first_phase)} mailed before the pause, {uncertain} uncertain")
