"""Scheduled exchanges: the workers' tick enqueues due partners; one exchange per partner at a time.

The lock is a Redis key per partner (``nl:partner-sync:<id>``) with a random token: it expires
``PARTNER_LOCK_SECONDS`` after its holder stopped renewing it (a thread renews it while the
work goes on, so a killed process cannot keep it), and only its holder's token releases it.
The CLI's push and pull take the same lock, so a manual exchange never overlaps a scheduled one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from redis.exceptions import LockError
from rq.job import Job
from sqlalchemy import select

from newsletter.core import clock
from newsletter.core.db import session_scope
from newsletter.core.runtime import CAMPAIGNS, Runtime, get_runtime
from newsletter.models import Partner
from newsletter.partners import wire
from newsletter.partners.invitations import enqueue_invitations
from newsletter.partners.registry import SYNC_PERIODS

log = logging.getLogger(__name__)
#: a scheduled exchange that failed is tried again this much later (or at its period, if sooner)
RETRY_FAILED = timedelta(hours=1)


class Busy(Exception):
    """Another exchange with this partner holds its lock."""


@contextmanager
def partner_lock(runtime: Runtime, partner_id: str) -> Iterator[None]:
    """Hold the partner's lock for the block, renewed while it runs; raises Busy if taken."""
    ttl = runtime.settings.partner_lock_seconds
    lock = runtime.redis.lock(
        f"nl:partner-sync:{partner_id}", timeout=ttl, blocking=False, thread_local=False
    )
    if not lock.acquire(blocking=False):
        raise Busy(f"another exchange with {partner_id} is running; try again when it is done")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.reacquire()
            except (LockError, Exception):  # noqa: BLE001 - lost or Redis away: the lock expires on its own
                log.warning("the sync lock of %s could not be renewed", partner_id)
                return

    keeper = threading.Thread(target=renew, name=f"partner-lock-{partner_id}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        try:
            lock.release()  # only with our token: an expired lock taken by another stays theirs
        except LockError:
            pass


def enqueue_due() -> list[str]:
    """The tick's part: one job per partner whose scheduled exchange is due (none twice)."""
    runtime = get_runtime()
    now = clock.now()
    with session_scope(runtime.sessions) as session:
        due = list(
            session.scalars(
                select(Partner.id).where(
                    Partner.sync != "off", Partner.next_sync_at.is_not(None), Partner.next_sync_at <= now
                )
            )
        )
    queued = []
    for partner_id in due:
        job_id = f"partner-sync-{partner_id}"
        if job_id in runtime.live_jobs([job_id]):
            continue
        if Job.exists(job_id, connection=runtime.redis):  # a finished or failed job of an earlier run
            Job.fetch(job_id, connection=runtime.redis).delete()
        runtime.queue(CAMPAIGNS).enqueue(sync_partner, partner_id, job_id=job_id, job_timeout=3600)
        queued.append(partner_id)
    return queued


def sync_partner(partner_id: str) -> dict:
    """RQ job: push then pull with one partner, if still due, under its lock; every run is in the history."""
    runtime = get_runtime()
    try:
        with partner_lock(runtime, partner_id):
            return _run(runtime, partner_id)
    except Busy as exc:
        return {"skipped": str(exc)}


def _run(runtime: Runtime, partner_id: str) -> dict:
    settings = runtime.settings
    with session_scope(runtime.sessions) as session:
        partner = session.get(Partner, partner_id)
        now = clock.now()
        if (
            partner is None
            or partner.sync not in SYNC_PERIODS
            or not partner.next_sync_at
            or partner.next_sync_at > now
        ):
            return {"skipped": "not due"}  # another worker ran it a moment ago, or it was turned off
        period = SYNC_PERIODS[partner.sync]
        errors = []
        done: dict = {"partner": partner_id}
        for step in ("push", "pull"):
            try:
                if step == "push":
                    outcomes = wire.push(session, settings, partner)
                else:
                    outcomes = wire.pull(
                        session, settings, partner, lambda ids: enqueue_invitations(runtime, ids)
                    )
                done[step] = [o.exchange_id for o in outcomes]
            except wire.ExchangeFailed as exc:  # its history row says why; the pull still runs
                errors.append(f"{step}: {exc}")
        partner = session.get(Partner, partner_id)
        if partner is not None and partner.sync in SYNC_PERIODS:
            partner.next_sync_at = now + (min(period, RETRY_FAILED) if errors else period)
            session.commit()
        if errors:
            log.warning("scheduled exchange with %s: %s", partner_id, "; ".join(errors))
            done["errors"] = errors
        return done
