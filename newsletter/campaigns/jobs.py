"""RQ entry points of campaign sending: batches and the tick (ids in, session, service, commit).

Exceptions are left to reach RQ so that its retries and failed-job registry work.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import LockError
from rq import Queue, Retry
from sqlalchemy import select

from newsletter.campaigns import batches, ledger, recovery, state, waves
from newsletter.core import clock
from newsletter.core.db import session_scope
from newsletter.core.runtime import CAMPAIGNS, get_runtime
from newsletter.mail.transports import make_transport
from newsletter.models import Campaign, CampaignStatus

log = logging.getLogger(__name__)


def send_batch(campaign_id: int, first_id: int, last_id: int) -> dict:
    """Send one keyset batch of a campaign over ``SEND_CONNECTIONS`` SMTP connections at once.

    The id range is cut into that many slices, each sent by its own thread with its own
    session, SMTP connection and claim (so a dead worker still leaves at most one uncertain
    row per claim). The threads overlap the round trips to the database and the relay,
    which is what a message mostly waits for. SQLite, one writer at a time, gets one slice.
    """
    runtime = get_runtime()
    connections = runtime.settings.send_connections
    if runtime.engine.dialect.name == "sqlite":
        connections = 1
    slices = _slices(first_id, last_id, connections)
    if len(slices) == 1:
        return _send_slice(campaign_id, *slices[0]).__dict__
    with ThreadPoolExecutor(len(slices), thread_name_prefix="send") as pool:
        reports = list(pool.map(lambda bounds: _send_slice(campaign_id, *bounds), slices))
    total = ledger.BatchReport()
    for report in reports:
        for name in ("sent", "deferred", "skipped", "failed", "retried"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        for reason, n in report.reasons.items():
            total.reasons[reason] = total.reasons.get(reason, 0) + n
        total.stopped = total.stopped or report.stopped
    return total.__dict__


def _slices(first_id: int, last_id: int, count: int) -> list[tuple[int, int]]:
    """``count`` contiguous id ranges covering first..last (fewer if the range is small)."""
    size = max(1, -(-(last_id - first_id + 1) // max(1, count)))
    return [(start, min(last_id, start + size - 1)) for start in range(first_id, last_id + 1, size)]


def _send_slice(campaign_id: int, first_id: int, last_id: int) -> ledger.BatchReport:
    runtime = get_runtime()
    transport = make_transport(runtime.settings)
    try:
        with session_scope(runtime.sessions) as session:
            return batches.send_batch(
                session,
                runtime.redis,
                runtime.settings,
                transport,
                campaign_id,
                first_id,
                last_id,
                commit=session.commit,
            )
    finally:
        transport.close()


def tick() -> dict:
    """The scheduler's heartbeat: start due waves, skip past deadlines, recover dead batches,
    and enqueue batches for every campaign with rows ready to send.

    Runs on any worker; a Redis lock makes sure only one tick works at a time.
    """
    runtime = get_runtime()
    settings = runtime.settings
    # A tick is short; if its worker dies holding the lock, another may tick soon after.
    # Two overlapping ticks are harmless: waves start under the ledger's unique constraint.
    lock = runtime.redis.lock("nl:tick", timeout=max(15, 3 * settings.tick_interval), blocking=False)
    if not lock.acquire(blocking=False):
        return {"skipped": "another tick is running"}
    try:
        now = clock.now()
        done: dict = {"waves_started": [], "batches": 0}
        with session_scope(runtime.sessions) as session:
            for wave in waves.due_waves(session, now):
                count = waves.start_wave(session, wave, now)
                session.commit()
                done["waves_started"].append((wave.campaign.slug, wave.name, count))
            done["past_deadline"] = recovery.skip_past_deadline(session, now)
            done["recovered"] = recovery.recover_stale_claims(
                session, runtime.redis, now, settings.stale_claim_seconds, settings.send_mark_every
            )
            session.commit()
            if runtime.queue(CAMPAIGNS).count == 0:
                jobs = []
                for campaign_id in recovery.due_campaigns(session, now):
                    for first_id, last_id in ledger.batch_ranges(
                        session, campaign_id, now, settings.batch_size
                    ):
                        jobs.append(
                            Queue.prepare_data(
                                send_batch,
                                (campaign_id, first_id, last_id),
                                timeout=1800,
                                retry=Retry(max=3, interval=[30, 120, 600]),
                            )
                        )
                if jobs:
                    runtime.queue(CAMPAIGNS).enqueue_many(jobs)
                done["batches"] = len(jobs)
            for campaign in session.scalars(
                select(Campaign).where(Campaign.status == CampaignStatus.SENDING)
            ):
                state.finish_if_done(session, campaign)
        return done
    finally:
        try:
            lock.release()
        except LockError:
            pass
