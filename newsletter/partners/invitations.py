"""Invitations to confirm for people a partner sent us: enqueued and delivered in batches.

Several hundred invitations go out per RQ job over one SMTP connection (one job per email
would cost more in RQ than in SMTP); rows that never reach a queue are sent by the sweep.
"""

from __future__ import annotations

import logging

import redis
from rq import Retry

from newsletter.core.db import session_scope
from newsletter.core.runtime import TRANSACTIONAL, Runtime, get_runtime
from newsletter.mail.transports import make_transport
from newsletter.subscribers import transactional

log = logging.getLogger(__name__)
PER_JOB = 200


def enqueue_invitations(runtime: Runtime, outbox_ids: list[int]) -> None:
    """Hand invitations to workers in jobs of PER_JOB; if Redis is down the sweep sends them later."""
    if runtime.settings.queue_sync:
        deliver_invitations(outbox_ids)
        return
    queue = runtime.queue(TRANSACTIONAL)
    batches = {
        f"outbox-invitations-{outbox_ids[i]}": outbox_ids[i : i + PER_JOB]
        for i in range(0, len(outbox_ids), PER_JOB)
    }
    # The rows name their batch's job first, so the sweep leaves them to it while it lives.
    with session_scope(runtime.sessions) as session:
        for job_id, ids in batches.items():
            transactional.set_job(session, ids, job_id)
        session.commit()
    try:
        queue.enqueue_many(
            [
                queue.prepare_data(
                    deliver_invitations,
                    args=(ids,),
                    job_id=job_id,
                    retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]),
                    timeout=1800,
                )
                for job_id, ids in batches.items()
            ]
        )
    except redis.RedisError as exc:
        log.warning("%d invitations not enqueued (Redis: %s); the sweep will send them", len(outbox_ids), exc)


def deliver_invitations(outbox_ids: list[int]) -> int:
    """RQ job: send these invitations over one connection; each is claimed first, so none goes twice."""
    runtime = get_runtime()
    sent = 0
    transport = make_transport(runtime.settings)
    try:
        for outbox_id in outbox_ids:
            with session_scope(runtime.sessions) as session:
                if not transactional.claim(session, outbox_id, runtime.settings.partner_invites_per_day):
                    session.commit()  # a held invitation keeps its not_before (the daily cap)
                    continue
                session.commit()
                if transactional.deliver(session, runtime.settings, transport, outbox_id):
                    sent += 1
    finally:
        transport.close()
    return sent
