"""RQ entry points of the outbox (confirmations, notices): deliver one email, sweep, enqueue.

Exceptions are left to reach RQ so that its retries and failed-job registry work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from redis.exceptions import LockError, WatchError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job

from newsletter.core.db import session_scope
from newsletter.core.runtime import LIVE, TRANSACTIONAL, Runtime, get_runtime
from newsletter.mail.transports import make_transport
from newsletter.subscribers import growth, transactional

log = logging.getLogger(__name__)
#: An outbox row's own job: retried for about an hour and a half, then the sweep has it.
RETRY = Retry(max=5, interval=[10, 60, 300, 900, 3600])
TIMEOUT = 120


def outbox_job_id(outbox_id: int) -> str:
    """The RQ job id of an outbox row's own job: one id per row, so never two such jobs."""
    return f"outbox-{outbox_id}"


def send_transactional(runtime: Runtime, outbox_id: int) -> bool:
    """Hand an outbox row to a worker in its own job ``outbox-<id>``; False if it has a live one.

    A finished or failed job of that id (an earlier round, or a deleted row whose id
    SQLite handed out again) is replaced. If Redis is down, a worker's sweep sends the
    row later.
    """
    if runtime.settings.queue_sync:
        deliver_transactional(outbox_id)
        return True
    job_id = outbox_job_id(outbox_id)
    try:
        for _ in range(2):
            try:
                runtime.queue(TRANSACTIONAL).enqueue(
                    deliver_transactional,
                    outbox_id,
                    job_id=job_id,
                    unique=True,  # atomic in Redis: refused while a job of that id exists
                    retry=RETRY,
                    job_timeout=TIMEOUT,
                )
                return True
            except DuplicateJobError:
                old = Job.fetch_many([job_id], connection=runtime.redis)[0]
                if old is not None and old.get_status(refresh=False) in LIVE:
                    return False
                if old is not None:
                    old.delete()
        return False
    except redis.RedisError as exc:
        log.warning("outbox %s not enqueued (Redis: %s); the sweep will send it", outbox_id, exc)
        return False


def transactional_job(outbox_id: int):
    """What ``send_transactional`` enqueues for one row, for ``Queue.enqueue_many``."""
    return Queue.prepare_data(
        deliver_transactional,
        (outbox_id,),
        job_id=outbox_job_id(outbox_id),
        retry=RETRY,
        timeout=TIMEOUT,
    )


def send_transactional_many(runtime: Runtime, outbox_ids: list[int]) -> None:
    """``send_transactional`` for rows just committed, in one Redis round trip instead of one each.

    The rows' jobs are enqueued together only if none of their ids exists (WATCH, EXISTS, then
    MULTI): the same promise as ``unique=True``. An id that exists or changes meanwhile (a row id
    SQLite handed out again) sends that batch one by one through ``send_transactional``. If Redis
    is down, a worker's sweep sends the rows later.
    """
    if not outbox_ids:
        return
    if runtime.settings.queue_sync:
        for outbox_id in outbox_ids:
            deliver_transactional(outbox_id)
        return
    queue = runtime.queue(TRANSACTIONAL)
    try:
        with runtime.redis.pipeline() as pipe:
            keys = [Job.key_for(outbox_job_id(outbox_id)) for outbox_id in outbox_ids]
            pipe.watch(*keys)
            if pipe.exists(*keys) == 0:
                pipe.multi()
                queue.enqueue_many([transactional_job(outbox_id) for outbox_id in outbox_ids], pipeline=pipe)
                try:
                    pipe.execute()
                    return
                except WatchError:
                    pass
    except redis.RedisError as exc:
        log.warning("%d outbox rows not enqueued (Redis: %s); the sweep will send them", len(outbox_ids), exc)
        return
    for outbox_id in outbox_ids:
        send_transactional(runtime, outbox_id)


def deliver_transactional(outbox_id: int) -> str | None:
    """Send one transactional email (confirmation, notice) from the outbox."""
    runtime = get_runtime()
    with session_scope(runtime.sessions) as session:
        if not transactional.claim(session, outbox_id, runtime.settings.partner_invites_per_day):
            session.commit()  # a partner invitation over its partner's daily cap is held to midnight
            return None  # sent already, or another worker has it
        session.commit()  # the claim is visible before the slow part starts
        transport = make_transport(runtime.settings)
        try:
            return transactional.deliver(session, runtime.settings, transport, outbox_id)
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
            if job_id not in live and send_transactional(runtime, outbox_id)
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


def count_growth() -> int:
    """Keep the overview's counts near the ledger's head (subscribers/growth.py), so that a page
    view counts only the events since the last maintenance run, never a backlog: the first catch-up
    after an upgrade (millions of events) runs here, not in a marketer's request. Returns the events
    counted."""
    runtime = get_runtime()
    with session_scope(runtime.sessions) as session:
        counted = growth.catch_up(session)
        growth.fold_changes(session)
        session.commit()
    return counted
