"""What the web app, the CLI and the jobs share: settings, database, Redis, queues.

Built once per process from the settings; jobs find it with ``get_runtime()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from newsletter.core.config import Settings, load_settings
from newsletter.core.db import make_engine, make_session_factory

#: Queue names in the order a worker serves them: transactional mail never waits for a sale.
TRANSACTIONAL = "transactional"
CAMPAIGNS = "campaigns"
QUEUES = [TRANSACTIONAL, CAMPAIGNS]
#: A job in one of these states will still run (again): the work it carries needs no other job.
LIVE = {JobStatus.CREATED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    _queues: dict[str, Queue] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        conn = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
        return cls(settings=settings, engine=engine, sessions=make_session_factory(engine), redis=conn)

    def queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.redis)
        return self._queues[name]

    def live_jobs(self, job_ids: list[str]) -> set[str]:
        """Which of these RQ jobs will still run (queued, started, waiting for a retry)."""
        jobs = Job.fetch_many(job_ids, connection=self.redis)
        return {job.id for job in jobs if job is not None and job.get_status(refresh=False) in LIVE}


def default_instance_path() -> Path:
    """``NEWSLETTER_INSTANCE_PATH``, else ``./instance`` (the working folder, as for ``./campaigns``).

    Not next to the code: an installed package lives in site-packages, which is no place for
    the config file, the SQLite database or the outbox.
    """
    env = os.environ.get("NEWSLETTER_INSTANCE_PATH")
    return Path(env) if env else Path.cwd() / "instance"


_current: Runtime | None = None


def set_runtime(runtime: Runtime) -> None:
    global _current
    _current = runtime


def get_runtime() -> Runtime:
    """The process's runtime, built from the environment if nobody set one."""
    global _current
    if _current is None:
        _current = Runtime.from_settings(load_settings(default_instance_path()))
    return _current
