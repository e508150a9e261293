"""Two stores side by side for the partner tests: two databases, two Redis DBs, two apps.

Loaded by the partner test modules with ``pytest_plugins = ["tests.partner_stores"]`` so that
the shared conftest stays as it is.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage

import pytest
import redis
from click.testing import CliRunner, Result
from flask import Flask
from rq import SimpleWorker
from sqlalchemy import func, select

from newsletter.cli import cli
from newsletter.core.config import Settings
from newsletter.core.runtime import QUEUES, Runtime, get_runtime
from tests.conftest import REDIS_URL, REDIS_URL_B, csrf_token, emptied, jobs_use, migrated_pg_schema

# REDIS_URL_B: the second store's Redis database, this worker's (NEWSLETTER_TEST_REDIS_URL_B, see conftest)
SECRET = "pair-secret-" + "s" * 40


@pytest.fixture(scope="session")
def _pg_schema_url_b() -> Iterator[str]:
    yield from migrated_pg_schema("nl_test_b")


@pytest.fixture
def second_database_url(request, database_url, tmp_path) -> str:
    """A second database of the same kind as ``database_url`` (a copy of the migrated template)."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "store-b.sqlite3"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    return emptied(request.getfixturevalue("_pg_schema_url_b"))


@pytest.fixture
def redis_b() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL_B)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@dataclass
class Store:
    app: Flask
    store_id: str

    @property
    def runtime(self) -> Runtime:
        return self.app.extensions["newsletter"]

    @property
    def settings(self) -> Settings:
        return self.app.settings

    def client(self):
        return self.app.test_client()

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "NEWSLETTER_SECRET_KEY": s.secret_key,
            "NEWSLETTER_DATABASE_URL": s.database_url,
            "NEWSLETTER_REDIS_URL": s.redis_url,
            "NEWSLETTER_SMTP_URL": s.smtp_url,
            "NEWSLETTER_BASE_URL": s.base_url,
            "NEWSLETTER_STORE_ID": s.store_id,
            "NEWSLETTER_STORE_NAME": s.store_name,
        }

    def cli(self, *args: str) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env())
        built = get_runtime()
        if built is not self.runtime:  # the command built its own app: close its connections
            built.engine.dispose()
            built.redis.close()
        jobs_use(self.runtime)  # jobs run here use ours
        return result

    def work(self) -> None:
        """Run this store's queued jobs in this process."""
        rt = jobs_use(self.runtime)
        SimpleWorker([rt.queue(q) for q in QUEUES], connection=rt.redis).work(burst=True)

    def job(self, func, *args, **kwargs):
        """Call a job function (``sweep_outbox``, ...) as this store's worker would."""
        jobs_use(self.runtime)
        return func(*args, **kwargs)

    def count(self, model) -> int:
        with self.runtime.sessions() as session:
            return session.scalar(select(func.count()).select_from(model))

    def signup(self, email: str, partners=(), first_name: str = "", topics=("newsletter",)):
        client = self.client()
        page = client.get("/subscribe").get_data(as_text=True)
        return client.post(
            "/subscribe",
            data={
                "csrf_token": csrf_token(page),
                "email": email,
                "first_name": first_name,
                "topics": list(topics),
                "partners": list(partners),
                "website": "",
            },
            headers={"User-Agent": "partner-test/1.0"},
        )

    def follow_confirm(self, mail: EmailMessage):
        """Open the confirmation link of ``mail`` and press the button (test client)."""
        body = mail.get_body(("plain",)).get_content()
        link = re.search(r"https?://\S+(/confirm/\S+)", body).group(1)
        client = self.client()
        page = client.get(link).get_data(as_text=True)
        return client.post(link, data={"csrf_token": csrf_token(page)}, headers={"User-Agent": "t/1"})


@pytest.fixture
def stores(make_app, second_database_url, redis_conn, redis_b):
    """Store A (the default test database) and store B (a second one), each knowing the other."""

    def build(serve=None, **settings):
        """``serve``: the conftest fixture, to put store B on real HTTP (returns its base URL too);
        ``settings``: overrides for both stores' apps (not seen by ``Store.cli``)."""
        from newsletter.partners.registry import add_partner

        a = Store(
            make_app(STORE_ID="store-a", STORE_NAME="Store A", BASE_URL="http://store-a.test", **settings),
            "store-a",
        )
        b_config = (
            dict(
                STORE_ID="store-b",
                STORE_NAME="Store B",
                DATABASE_URL=second_database_url,
                REDIS_URL=REDIS_URL_B,
            )
            | settings
        )
        if serve is None:
            b = Store(make_app(BASE_URL="http://store-b.test", **b_config), "store-b")
        else:
            b = Store(serve(**b_config)[0], "store-b")
        for store, other, name in ((a, "store-b", "Store B"), (b, "store-a", "Store A")):
            with store.runtime.sessions() as session:
                add_partner(session, other, name, SECRET)
                session.commit()
        return a, b

    assert REDIS_URL != REDIS_URL_B, "the two stores need two Redis databases"
    return build
