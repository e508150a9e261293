"""``newsletter worker``: an RQ worker that also runs the engine's tick, sweeps the outbox and keeps
the dashboard's counts caught up."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy.exc import OperationalError

from newsletter.core.runtime import QUEUES, Runtime

log = logging.getLogger(__name__)


class NewsletterWorker(Worker):
    """RQ's worker, plus the engine's tick and the outbox sweep at every maintenance run."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        _sweep()

    @property
    def dequeue_timeout(self) -> int:
        # RQ blocks on an idle queue for worker_ttl - 15 s (405 s) before it looks at its
        # maintenance tasks; the tick must come back every maintenance_interval instead.
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))


def _sweep() -> None:
    from newsletter.campaigns.jobs import tick
    from newsletter.campaigns.tallies import fold_tallies
    from newsletter.partners.sync import enqueue_due
    from newsletter.subscribers.jobs import count_growth, sweep_outbox

    for task in (sweep_outbox, tick, fold_tallies, count_growth, enqueue_due):
        try:
            task()
        except (RedisError, OperationalError) as exc:  # an outage: one line, it runs again
            log.warning("%s failed: %s", task.__name__, str(exc).splitlines()[0])
            log.debug("%s failed", task.__name__, exc_info=True)
        except Exception:  # noqa: BLE001 - a failed sweep must not stop the worker; it runs again
            log.exception("%s failed", task.__name__)


def run_worker(runtime: Runtime, queues: list[str] | None = None, *, burst: bool = False) -> bool:
    """Serve ``queues`` (transactional first) until stopped, or until empty with ``burst``.

    Redis or the database unreachable at start raises (the CLI makes it one line).
    """
    runtime.redis.ping()
    with runtime.engine.connect():
        pass
    _sweep()
    worker = NewsletterWorker(
        [runtime.queue(name) for name in (queues or QUEUES)],
        connection=runtime.redis,
        maintenance_interval=runtime.settings.tick_interval,
    )
    return worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
