"""What the web app, the CLI and the jobs share: configuration, database, Redis, queues.

Built once per process from the configuration; jobs find it with ``get_runtime()``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from newsletter.config import load_config
from newsletter.db import make_engine, make_session_factory

log = logging.getLogger(__name__)

#: Queue names in the order a worker serves them: transactional mail never waits for a sale.
TRANSACTIONAL = "transactional"
CAMPAIGNS = "campaigns"
QUEUES = [TRANSACTIONAL, CAMPAIGNS]
#: A job in one of these states will still run (again): its outbox rows need no other job.
LIVE = {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def outbox_job_id(outbox_id: int) -> str:
    """The RQ job id of an outbox row's own job: one id per row, so never two such jobs."""
    return f"outbox-{outbox_id}"


@dataclass
class Runtime:
    config: dict[str, Any]
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    _queues: dict[str, Queue] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Runtime:
        engine = make_engine(config["DATABASE_URL"])
        conn = redis.Redis.from_url(
            config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
        return cls(config=config, engine=engine, sessions=make_session_factory(engine), redis=conn)

    def queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.redis)
        return self._queues[name]

    def send_transactional(self, outbox_id: int) -> bool:
        """Hand an outbox row to a worker in its own job ``outbox-<id>``; False if it has a live one.

        A finished or failed job of that id (an earlier round, or a deleted row whose id
        SQLite handed out again) is replaced. If Redis is down, a worker's sweep sends the
        row later.
        """
        from newsletter import jobs

        if self.config["QUEUE_SYNC"]:
            jobs.deliver_transactional(outbox_id)
            return True
        job_id = outbox_job_id(outbox_id)
        try:
            for _ in range(2):
                try:
                    self.queue(TRANSACTIONAL).enqueue(
                        jobs.deliver_transactional,
                        outbox_id,
                        job_id=job_id,
                        unique=True,  # atomic in Redis: refused while a job of that id exists
                        retry=Retry(max=5, interval=[10, 60, 300, 900, 3600]),
                        job_timeout=120,
                    )
                    return True
                except DuplicateJobError:
                    old = Job.fetch_many([job_id], connection=self.redis)[0]
                    if old is not None and old.get_status(refresh=False) in LIVE:
                        return False
                    if old is not None:
                        old.delete()
            return False
        except redis.RedisError as exc:
            log.warning("outbox %s not enqueued (Redis: %s); the sweep will send it", outbox_id, exc)
            return False

    def live_jobs(self, job_ids: list[str]) -> set[str]:
        """Which of these RQ jobs will still run (queued, started, waiting for a retry)."""
        jobs = Job.fetch_many(job_ids, connection=self.redis)
        return {job.id for job in jobs if job is not None and job.get_status(refresh=False) in LIVE}


def default_instance_path() -> Path:
    env = os.environ.get("NEWSLETTER_INSTANCE_PATH")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "instance"


_current: Runtime | None = None


def set_runtime(runtime: Runtime) -> None:
    global _current
    _current = runtime


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment if nobody set one."""
    global _current
    if _current is None:
        _current = Runtime.from_config(load_config(default_instance_path()))
    return _current
