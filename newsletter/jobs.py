"""RQ entry points: ids in, open a session, call a service, commit.

Exceptions are left to reach RQ so that its retries and failed-job registry work.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from redis.exceptions import LockError
from rq import Queue, Retry
from sqlalchemy import select

from newsletter import clock
from newsletter.db import session_scope
from newsletter.mail.transports import make_transport
from newsletter.models import Campaign, CampaignStatus
from newsletter.runtime import CAMPAIGNS, get_runtime, outbox_job_id
from newsletter.services import sending, transactional

log = logging.getLogger(__name__)


def deliver_transactional(outbox_id: int) -> str | None:
    """Send one transactional email (confirmation, notice) from the outbox."""
    runtime = get_runtime()
    with session_scope(runtime.sessions) as session:
        if not transactional.claim(session, outbox_id):
            return None  # sent already, or another worker has it
        session.commit()  # the claim is visible before the slow part starts
        transport = make_transport(runtime.config)
        try:
            return transactional.deliver(session, runtime.config, transport, outbox_id)
        finally:
            transport.close()


def sweep_outbox(older_than: timedelta = timedelta(seconds=30)) -> int:
    """Enqueue transactional mail that no live job carries; returns how many.

    Rows still queued, running or waiting for an RQ retry are left to their job, so a row
    never has two jobs; rows out of attempts are given up. One sweep at a time (a Redis
    lock): two sweeps could otherwise both replace a row's finished job.
    """
    runtime = get_runtime()
    lock = runtime.redis.lock("nl:sweep", timeout=300, blocking=False)
    if not lock.acquire(blocking=False):
        return 0
    try:
        with session_scope(runtime.sessions) as session:
            transactional.give_up_exhausted(session)
            session.commit()
            rows = transactional.unsent_outbox(session, older_than)
        job_ids = {outbox_id: job_id or outbox_job_id(outbox_id) for outbox_id, job_id in rows}
        live = runtime.live_jobs(list(job_ids.values())) if job_ids else set()
        enqueued = [
            outbox_id
            for outbox_id, job_id in job_ids.items()
            if job_id not in live and runtime.send_transactional(outbox_id)
        ]
        from_batches = [outbox_id for outbox_id in enqueued if job_ids[outbox_id] != outbox_job_id(outbox_id)]
        if from_batches:  # their own job carries them now
            with session_scope(runtime.sessions) as session:
                transactional.set_job(session, from_batches, None)
                session.commit()
    finally:
        try:
            lock.release()
        except LockError:
            pass
    if enqueued:
        log.info("sweep: enqueued %d transactional emails that had no live job", len(enqueued))
    return len(enqueued)


def send_batch(campaign_id: int, first_id: int, last_id: int) -> dict:
    """Send one keyset batch of a campaign over ``SEND_CONNECTIONS`` SMTP connections at once.

    The id range is cut into that many slices, each sent by its own thread with its own
    session, SMTP connection and claim (so a dead worker still leaves at most one uncertain
    row per claim). The threads overlap the round trips to the database and the relay,
    which is what a message mostly waits for. SQLite, one writer at a time, gets one slice.
    """
    runtime = get_runtime()
    connections = runtime.config["SEND_CONNECTIONS"]
    if runtime.engine.dialect.name == "sqlite":
        connections = 1
    slices = _slices(first_id, last_id, connections)
    if len(slices) == 1:
        return _send_slice(campaign_id, *slices[0]).__dict__
    with ThreadPoolExecutor(len(slices), thread_name_prefix="send") as pool:
        reports = list(pool.map(lambda bounds: _send_slice(campaign_id, *bounds), slices))
    total = sending.BatchReport()
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


def _send_slice(campaign_id: int, first_id: int, last_id: int) -> sending.BatchReport:
    runtime = get_runtime()
    transport = make_transport(runtime.config)
    try:
        with session_scope(runtime.sessions) as session:
            return sending.send_batch(
                session,
                runtime.redis,
                runtime.config,
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
    config = runtime.config
    # A tick is short; if its worker dies holding the lock, another may tick soon after.
    # Two overlapping ticks are harmless: waves start under the ledger's unique constraint.
    lock = runtime.redis.lock("nl:tick", timeout=max(15, 3 * config["TICK_INTERVAL"]), blocking=False)
    if not lock.acquire(blocking=False):
        return {"skipped": "another tick is running"}
    try:
        now = clock.now()
        done: dict = {"waves_started": [], "batches": 0}
        with session_scope(runtime.sessions) as session:
            for wave in sending.due_waves(session, now):
                count = sending.start_wave(session, wave, now)
                session.commit()
                done["waves_started"].append((wave.campaign.slug, wave.name, count))
            done["past_deadline"] = sending.skip_past_deadline(session, now)
            done["recovered"] = sending.recover_stale_claims(
                session, runtime.redis, now, config["STALE_CLAIM_SECONDS"]
            )
            session.commit()
            if runtime.queue(CAMPAIGNS).count == 0:
                jobs = []
                for campaign_id in sending.due_campaigns(session, now):
                    for first_id, last_id in sending.batch_ranges(
                        session, campaign_id, now, config["BATCH_SIZE"]
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
                sending.finish_if_done(session, campaign)
        return done
    finally:
        try:
            lock.release()
        except LockError:
            pass
