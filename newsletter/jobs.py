"""RQ entry points: ids in, open a session, call a service, commit.

Exceptions are left to reach RQ so that its retries and failed-job registry work.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from newsletter.db import session_scope
from newsletter.mail.transports import make_transport
from newsletter.runtime import get_runtime
from newsletter.services import transactional

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
    """Enqueue transactional mail that never reached a worker; returns how many."""
    runtime = get_runtime()
    with session_scope(runtime.sessions) as session:
        ids = transactional.unsent_outbox_ids(session, older_than)
    for outbox_id in ids:
        runtime.send_transactional(outbox_id)
    if ids:
        log.info("sweep: re-enqueued %d unsent transactional emails", len(ids))
    return len(ids)
