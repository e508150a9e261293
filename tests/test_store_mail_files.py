"""Store mail as editable files: `events check` locates every problem at file:line:col, `events preview`
writes what a customer would get. The checks run on a copy of templates/ (``TEMPLATES`` pointed at it)."""

from __future__ import annotations

import json
import shutil
from email import message_from_bytes, policy

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.core.config import load_settings
from newsletter.mail import templates
from newsletter.store_events.check import problems

ORIGINAL = templates.TEMPLATES


@pytest.fixture
def settings(tmp_path):
    environ = {"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_STORE_NAME": "Bramble Books"}
    return load_settings(
        tmp_path / "instance", environ={**environ, "NEWSLETTER_FROM": "Bramble <help@bramble.example>"}
    )


@pytest.fixture
def email_dir(tmp_path, monkeypatch):
    """A copy of templates/ that the engine renders from; edit files under the returned email/ folder."""
    copy = tmp_path / "templates"
    shutil.copytree(ORIGINAL, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(templates, "TEMPLATES", copy)
    templates.email_environment.cache_clear()
    yield copy / "email"
    monkeypatch.undo()
    templates.email_environment.cache_clear()


def edit(path, old, new):
    text = path.read_text()
    assert old in text, (path.name, old)
    path.write_text(text.replace(old, new, 1))


def test_the_shipped_files_pass(settings):
    assert problems(settings) == []


def test_every_problem_of_every_kind_at_once_each_at_file_line_col(settings, email_dir):
    # a '}' short, in the title block of order_delayed.mjml (line 2)
    edit(
        email_dir / "order_delayed.mjml",
        "order=event.order_id) }}{% endblock",
        "order=event.order_id) } will{% endblock",
    )
    # a name no store mail has
    edit(
        email_dir / "order_placed.txt",
        "{% if event.first_name %}",
        "{{ customer.name }}{% if event.first_name %}",
    )
    # a field only order_delayed events carry, in the shipping mail: it would fail at send time
    edit(email_dir / "order_shipped.txt", "\n\n", "\n\nBy {{ event.new_date }}\n")
    edit(email_dir / "order_cancelled.mjml", "</mj-text>", "")  # the first <mj-text> left open
    edit(email_dir / "back_in_stock.txt", "\n\n", "\n\nAll teapots 20% off in our sale!\n")
    (email_dir / "item_out_of_stock.mjml").write_text(
        (email_dir / "item_out_of_stock.mjml").read_text()
        + '{# <a href="https://shop.example/early-access/x">first pick</a> #}\n'
    )
    found = problems(settings)
    lines = {
        name: (email_dir / name).read_text().splitlines()
        for name in (
            "order_delayed.mjml",
            "order_placed.txt",
            "order_shipped.txt",
            "back_in_stock.txt",
            "item_out_of_stock.mjml",
            "order_cancelled.mjml",
        )
    }

    def at(name, needle, number=None):
        for index, line in enumerate(lines[name], start=1):
            if needle in line and number in (None, index):
                return f"templates/email/{name}:{index}:{line.index(needle) + 1}"
        raise AssertionError((name, needle))

    expected = [
        f"{at('back_in_stock.txt', '20% off')}: marketing in store mail: '20% off'",
        f"{at('back_in_stock.txt', 'sale')}: marketing in store mail: 'sale'",
        f"{at('item_out_of_stock.mjml', '/early-access/')}: marketing in store mail: '/early-access/'",
        f"{at('order_cancelled.mjml', '<mj-text>')}: MJML: <mj-text> is never closed",
        f"{at('order_delayed.mjml', '} will')}: Jinja: unexpected '}}'",
        f"{at('order_placed.txt', 'customer.name')}: 'customer' is undefined",
        f"{at('order_shipped.txt', 'event.new_date')}: 'dict object' has no attribute 'new_date'",
    ]
    assert len(found) == len(expected), found
    for line, wanted in zip(sorted(found), sorted(expected), strict=True):
        assert line.startswith(wanted), (line, wanted)


def test_early_access_wording_and_a_missing_file_are_refused(settings, email_dir):
    (email_dir / "order_placed.txt").unlink()
    edit(email_dir / "back_in_stock.mjml", "<mj-text>", "<mj-text>Early access for you! ")
    found = problems(settings)
    assert (
        "templates/email/order_placed.txt:1:1: missing: every store kind needs "
        "order_placed.mjml and order_placed.txt" in found
    )
    line = next(p for p in found if p.startswith("templates/email/back_in_stock.mjml:"))
    number = next(
        i
        for i, text in enumerate((email_dir / "back_in_stock.mjml").read_text().splitlines(), 1)
        if "Early" in text
    )
    col = (email_dir / "back_in_stock.mjml").read_text().splitlines()[number - 1].index("Early") + 1
    assert (
        line == f"templates/email/back_in_stock.mjml:{number}:{col}: marketing in store mail: 'Early access'"
    )


def test_a_syntax_error_in_the_shared_layout_is_reported_once(settings, email_dir):
    edit(email_dir / "transactional.mjml", "{{ postal_address }}", "{{ postal_address }")
    found = problems(settings)
    line = next(
        i
        for i, t in enumerate((email_dir / "transactional.mjml").read_text().splitlines(), 1)
        if "postal_address }<" in t
    )
    text = (email_dir / "transactional.mjml").read_text().splitlines()[line - 1]
    assert found == [
        f"templates/email/transactional.mjml:{line}:{text.index('}<') + 1}: Jinja: unexpected '}}'"
    ]


def test_the_command_prints_problems_on_stderr_and_exits_1(settings, email_dir, tmp_path):
    env = {"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite"}
    runner = (
        CliRunner(mix_stderr=False)
        if "mix_stderr" in CliRunner.__init__.__code__.co_varnames
        else CliRunner()
    )
    good = runner.invoke(cli, ["events", "check"], env=env)
    assert good.exit_code == 0, good.output
    assert good.stdout == "store mail: every kind renders, no marketing content\n"
    edit(email_dir / "order_placed.txt", "{% if event.first_name %}", "{{ nobody }}{% if event.first_name %}")
    bad = runner.invoke(cli, ["events", "check"], env=env)
    assert bad.exit_code == 1 and bad.stdout == ""
    assert bad.stderr.startswith("templates/email/order_placed.txt:3:4: 'nobody' is undefined")


def test_preview_writes_html_text_and_the_message(settings, tmp_path):
    env = {"NEWSLETTER_SECRET_KEY": "k", "NEWSLETTER_STORE_NAME": "Bramble Books"}
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["events", "preview", "order_delayed", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    html = (out / "order_delayed.html").read_text()
    text = (out / "order_delayed.txt").read_text()
    message = message_from_bytes((out / "order_delayed.eml").read_bytes(), policy=policy.default)
    assert "the supplier is late" in html and "2026-12-24" in text and "Bramble Books" in html
    assert message["Subject"] == "Your order 1001 will be late: new date 2026-12-24"
    assert (out / "order_delayed.subject.txt").read_text() == message["Subject"] + "\n"
    assert "subject: Your order 1001 will be late" in result.output


def test_preview_of_a_real_event_and_of_a_bad_one(tmp_path):
    env = {"NEWSLETTER_SECRET_KEY": "k"}
    event = {
        "event_id": "e1",
        "kind": "order_shipped",
        "email": "ann@example.com",
        "order_id": "B-77",
        "tracking_url": "https://carrier.example/track/B-77",
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["events", "preview", "order_shipped", "--event", str(path), "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    assert "https://carrier.example/track/B-77" in (out / "order_shipped.txt").read_text()
    path.write_text(json.dumps({**event, "order_id": ""}))
    bad = CliRunner().invoke(
        cli, ["events", "preview", "order_shipped", "--event", str(path), "--out", str(out)], env=env
    )
    assert bad.exit_code == 1 and "order_id" in bad.output and "Traceback" not in bad.output
    path.write_text(json.dumps(event))
    wrong = CliRunner().invoke(cli, ["events", "preview", "order_placed", "--event", str(path)], env=env)
    assert wrong.exit_code == 1 and "order_shipped" in wrong.output


def test_preview_of_a_kind_that_sends_nothing_is_one_line(tmp_path):
    result = CliRunner().invoke(
        cli, ["events", "preview", "back_in_stock_request"], env={"NEWSLETTER_SECRET_KEY": "k"}
    )
    assert result.exit_code == 1 and "not a kind that sends mail" in result.output
