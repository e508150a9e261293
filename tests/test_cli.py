"""The operator's commands, run as a subprocess would (click's runner, real database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from newsletter.cli import cli
from newsletter.core.migrate import downgrade, upgrade
from tests.conftest import REDIS_URL, _free_port, confirm_link, csrf_token

NEWSLETTER = Path(sys.executable).with_name("newsletter")  # the installed console script


def env_for(app) -> dict[str, str]:
    settings = app.settings
    return {
        "NEWSLETTER_SECRET_KEY": settings.secret_key,
        "NEWSLETTER_DATABASE_URL": settings.database_url,
        "NEWSLETTER_REDIS_URL": settings.redis_url,
        "NEWSLETTER_SMTP_URL": settings.smtp_url,
    }


def test_subscribers_show_prints_status_topics_and_ledger(app, client, signup, work, smtp_sink):
    signup("ann@example.com", topics=["newsletter", "product-news"])
    work()
    link = confirm_link(smtp_sink.take()[0]).replace("https://newsletter.test", "")
    page = client.get(link).get_data(as_text=True)
    client.post(link, data={"csrf_token": csrf_token(page)})

    result = CliRunner().invoke(cli, ["subscribers", "show", "ANN@example.com"], env=env_for(app))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["status"] == "active"
    assert data["topics"] == {"newsletter": "active", "product-news": "active"}
    assert [e["action"] for e in data["consent_ledger"]] == ["signup_requested", "confirmed"]
    assert data["consent_ledger"][0]["wording_sha256"]


def test_subscribers_show_unknown_and_malformed(app):
    runner = CliRunner()
    unknown = runner.invoke(cli, ["subscribers", "show", "nobody@example.com"], env=env_for(app))
    assert unknown.exit_code == 1 and "no subscriber with address nobody@example.com" in unknown.output
    bad = runner.invoke(cli, ["subscribers", "show", "not an address"], env=env_for(app))
    assert bad.exit_code == 1 and "Error: 'not an address':" in bad.output


def test_bad_configuration_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["subscribers", "show", "a@example.com"],
        env={
            "NEWSLETTER_INSTANCE_PATH": str(tmp_path),
            "NEWSLETTER_SECRET_KEY": "k",
            "NEWSLETTER_SMTP_URL": "mail.example.com",
        },
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: configuration: NEWSLETTER_SMTP_URL: expected a URL starting with smtp:// or smtps:// "
        "(got 'mail.example.com')"
    ]


def test_migrations_go_down_and_up(database_url):
    url = database_url.replace("postgresql://", "postgresql+psycopg://")
    downgrade(database_url, "base")
    engine = create_engine(url)
    assert "subscribers" not in inspect(engine).get_table_names()
    upgrade(database_url)
    assert {"subscribers", "topics", "subscriptions", "consent_events", "outbox_emails"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


# --- Infrastructure down: one line naming the setting and the address, never a traceback ----------


def newsletter(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    """Run the real ``newsletter`` command with these NEWSLETTER_* settings."""
    env = {
        **os.environ,
        "NEWSLETTER_INSTANCE_PATH": str(tmp_path),
        "NEWSLETTER_SECRET_KEY": "k",
        "NEWSLETTER_REDIS_URL": REDIS_URL,
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/newsletter.sqlite3",
        **{f"NEWSLETTER_{key}": value for key, value in settings.items()},
    }
    return subprocess.run(
        [NEWSLETTER, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_worker_without_redis_is_one_line(tmp_path):
    port = _free_port()  # nothing listens there
    done = newsletter(tmp_path, "worker", "--burst", REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0")
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith(
        f"Error: cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (NEWSLETTER_REDIS_URL): "
    ), line
    assert "Connection refused" in line and "s3cret" not in done.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["campaign", "list"]])
@pytest.mark.parametrize("where", ["postgresql", "sqlite"])
def test_database_unreachable_is_one_line_naming_the_setting(tmp_path, command, where):
    port = _free_port()
    url, shown = {
        "postgresql": (
            f"postgresql://nl:s3cret@127.0.0.1:{port}/test",
            f"postgresql://nl:***@127.0.0.1:{port}/test",
        ),
        "sqlite": (
            f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3",
            f"sqlite:///{tmp_path}/no/such/dir/x.sqlite3",
        ),
    }[where]
    done = newsletter(tmp_path, *command, DATABASE_URL=url)
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: cannot reach the database at {shown} (NEWSLETTER_DATABASE_URL): "), line
    assert "db upgrade" not in line and "s3cret" not in done.stderr


def test_campaign_list_on_an_unmigrated_database_suggests_db_upgrade(tmp_path):
    done = newsletter(tmp_path, "campaign", "list")
    assert done.returncode != 0
    [line] = done.stderr.splitlines()
    assert line.startswith("Error: cannot read topics (") and line.endswith("run 'newsletter db upgrade'")


def test_worker_burst_on_empty_queues_exits_zero(tmp_path, redis_conn):
    """An empty queue is a clean stop (RQ's work() returns False when no job ran: it was exit 1)."""
    from tests.conftest import REDIS_URL

    assert newsletter(tmp_path, "db", "upgrade").returncode == 0
    done = newsletter(tmp_path, "worker", "--burst", REDIS_URL=REDIS_URL)
    assert done.returncode == 0, done.stderr
