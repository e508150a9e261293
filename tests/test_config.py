"""Configuration: defaults, instance file, environment; one-line errors naming the key."""

import pytest

from newsletter.core.config import ConfigError, load_settings


def test_defaults_use_instance_folder(tmp_path):
    settings = load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k"})
    assert settings.database_url == f"sqlite:///{tmp_path / 'newsletter.sqlite3'}"
    assert settings.outbox_dir == str(tmp_path / "outbox")
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.smtp_url == ""


def test_missing_secret_key_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY is missing"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NEWSLETTER_SMTP_URL", "http://mail", "NEWSLETTER_SMTP_URL: expected a URL starting with smtp://"),
        ("NEWSLETTER_DATABASE_URL", "mysql://x", "NEWSLETTER_DATABASE_URL: expected a URL"),
        (
            "NEWSLETTER_CONFIRM_MAX_AGE_DAYS",
            "seven",
            "NEWSLETTER_CONFIRM_MAX_AGE_DAYS: expected a whole number",
        ),
        ("NEWSLETTER_SIGNUP_RATE_LIMIT", "20", 'NEWSLETTER_SIGNUP_RATE_LIMIT: expected "COUNT/SECONDS"'),
        (
            "NEWSLETTER_CHECK_DELIVERABILITY",
            "maybe",
            "NEWSLETTER_CHECK_DELIVERABILITY: expected true or false",
        ),
        ("NEWSLETTER_SMTP_PASWORD", "x", "NEWSLETTER_SMTP_PASWORD: unknown setting"),
    ],
)
def test_malformed_values_are_one_line_errors(tmp_path, name, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k", name: value})
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_test_and_bench_variables_are_no_settings(tmp_path):
    """The suite and bench/*.py start engine processes in their own environment."""
    settings = load_settings(
        tmp_path,
        environ={
            "NEWSLETTER_SECRET_KEY": "k",
            "NEWSLETTER_TEST_PG_URL": "postgresql://x/test",
            "NEWSLETTER_BENCH_PG_URL": "postgresql://x/bench",
            "NEWSLETTER_BENCH_REDIS_URL": "redis://x/13",
        },
    )
    assert settings.secret_key == "k"
    with pytest.raises(ConfigError, match="^NEWSLETTER_BENCHX: unknown setting"):
        load_settings(tmp_path, environ={"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_BENCHX": "1"})


def test_environment_overrides_instance_file(tmp_path):
    (tmp_path / "config.toml").write_text('secret_key = "file"\nstore_name = "From file"\n')
    settings = load_settings(
        tmp_path,
        environ={"NEWSLETTER_STORE_NAME": "From env", "NEWSLETTER_SECRET_KEY_FALLBACKS": "old1, old2"},
    )
    assert settings.secret_key == "file"
    assert settings.store_name == "From env"
    assert settings.secret_key_fallbacks == ("old1", "old2")


def test_unknown_key_in_instance_file(tmp_path):
    (tmp_path / "config.toml").write_text('secret_key = "k"\nsmtp_host = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'smtp_host'"):
        load_settings(tmp_path, environ={})


def test_broken_instance_file(tmp_path):
    (tmp_path / "config.toml").write_text('secret_key = "k\n')
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings(tmp_path, environ={})


def test_the_default_base_url_is_where_make_run_serves():
    """Links in a first try's emails lead to the server `make run` starts."""
    import re
    from pathlib import Path
    from urllib.parse import urlsplit

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    served = re.search(r"gunicorn .*--bind [\d.]+:(\d+) wsgi:app", makefile).group(1)
    settings = load_settings("/nonexistent", environ={"NEWSLETTER_SECRET_KEY": "k" * 32})
    assert urlsplit(settings.base_url).port == int(served) == 8000


def test_the_example_from_and_postal_address_are_named_until_replaced():
    from newsletter.core.config import example_identity

    shipped = load_settings("/nonexistent", environ={"NEWSLETTER_SECRET_KEY": "k" * 32})
    assert [p.split()[0] for p in example_identity(shipped)] == ["FROM", "POSTAL_ADDRESS"]
    own = load_settings(
        "/nonexistent",
        environ={
            "NEWSLETTER_SECRET_KEY": "k" * 32,
            "NEWSLETTER_FROM": "Linen & Tea <news@linen-tea.example>",
            "NEWSLETTER_POSTAL_ADDRESS": "4 Mill Lane, Bristol BS1 4XX, UK",
        },
    )
    assert example_identity(own) == []


def test_a_worker_started_with_the_example_identity_warns(app):
    from click.testing import CliRunner

    from newsletter.cli import cli
    from tests.test_cli import env_for

    done = CliRunner().invoke(cli, ["worker", "--burst"], env=env_for(app))
    assert "Traceback" not in done.output
    assert "warning: FROM is still the example 'news@store.example'" in done.stderr
    assert "set NEWSLETTER_POSTAL_ADDRESS to the store's own" in done.stderr
    own = {"NEWSLETTER_FROM": "Shop <news@shop.example>", "NEWSLETTER_POSTAL_ADDRESS": "1 Road, Town"}
    quiet = CliRunner().invoke(cli, ["worker", "--burst"], env={**env_for(app), **own})
    assert "warning" not in quiet.stderr
