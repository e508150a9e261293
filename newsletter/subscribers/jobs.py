"""RQ entry points of the outbox (confirmations, notices): deliver one email, sweep, enqueue.

Exceptions are left to reach RQ so that its retries and failed-job registry work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from rq import Retry

from newsletter.core.db import session_scope
from newsletter.core.runtime import TRANSACTIONAL, Runtime, get_runtime
from newsletter.mail.transports import make_transport
from newsletter.subscribers import transactional

log = logging.getLogger(__name__)


def send_transactional(runtime: Runtime, outbox_id: int) -> None:
    """Hand an outbox row to a worker; if Redis is down, a worker's sweep sends it later."""
    if runtime.config["QUEUE_SYNC"]:
        deliver_transactional(outbox_id)
        return
    try:
        runtime.queue(TRANSACTIONAL).enqueue(
            deliver_transactional,
            outbox_id,
            retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]),
            job_timeout=120,
        )
    except redis.RedisError as exc:
        log.warning("outbox %s not enqueued (Redis: %s); the sweep will send it", outbox_id, exc)


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
    """Enqueue transactional mail that never reached a worker; returns how many."""
    runtime = get_runtime()
    with session_scope(runtime.sessions) as session:
        ids = transactional.unsent_outbox_ids(session, older_than)
    for outbox_id in ids:
        send_transactional(runtime, outbox_id)
    if ids:
        log.info("sweep: re-enqueued %d unsent transactional emails", len(ids))
    return len(ids)
