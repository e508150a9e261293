"""``newsletter worker``: an RQ worker that also sweeps the outbox for unsent mail."""

from __future__ import annotations

import logging

from rq import Worker

from newsletter.runtime import QUEUES, Runtime

log = logging.getLogger(__name__)


class NewsletterWorker(Worker):
    """RQ's worker, plus a sweep of the outbox at start and at every maintenance run."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        _sweep()


def _sweep() -> None:
    from newsletter.jobs import sweep_outbox

    try:
        sweep_outbox()
    except Exception:  # noqa: BLE001 - a failed sweep must not stop the worker; it runs again
        log.exception("outbox sweep failed")


def run_worker(runtime: Runtime, queues: list[str] | None = None, *, burst: bool = False) -> bool:
    """Serve ``queues`` (transactional first) until stopped, or until empty with ``burst``."""
    _sweep()
    worker = NewsletterWorker(
        [runtime.queue(name) for name in (queues or QUEUES)],
        connection=runtime.redis,
        maintenance_interval=runtime.config["SWEEP_INTERVAL"],
    )
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
