"""The operator's commands, run as a subprocess would (click's runner, real database)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from sqlalchemy import create_engine, inspect

from newsletter.cli import cli
from newsletter.migrate import downgrade, upgrade
from tests.conftest import confirm_link, csrf_token


def env_for(app) -> dict[str, str]:
    config = app.config
    return {
        "NEWSLETTER_SECRET_KEY": config["SECRET_KEY"],
        "NEWSLETTER_DATABASE_URL": config["DATABASE_URL"],
        "NEWSLETTER_REDIS_URL": config["REDIS_URL"],
        "NEWSLETTER_SMTP_URL": config["SMTP_URL"],
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
