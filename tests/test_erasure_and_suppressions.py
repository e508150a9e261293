"""Erasure leaves nothing personal behind; the suppression list outlives it; operators' CLI."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from click.testing import CliRunner
from sqlalchemy import select

from newsletter.cli import cli
from newsletter.core.db import Base
from newsletter.models import ConsentEvent, Subscriber, Suppression
from newsletter.models.subscribers import address_hash
from newsletter.subscribers import links
from tests.conftest import confirm_link, csrf_token
from tests.test_cli import env_for


def path(url: str) -> str:
    return urlsplit(url).path


def scan_all_tables(runtime, needles: list[str]) -> list[str]:
    """Every (table.column) holding any needle, case-insensitively, across the whole schema."""
    hits = []
    with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)).mappings():
                for column, value in row.items():
                    text = json.dumps(value, default=str) if not isinstance(value, str) else value
                    if any(n.lower() in text.lower() for n in needles):
                        hits.append(f"{table.name}.{column}")
    return hits


def test_erasure_from_the_preference_centre(app, client, signup, runtime, work, smtp_sink):
    signup("Zoe.Private@example.com", first_name="Zoedora", topics=["newsletter", "early-access"])
    work()
    link = path(confirm_link(smtp_sink.take()[0]))
    client.post(link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))})
    assert scan_all_tables(runtime, ["Zoe.Private@example.com", "Zoedora"])  # the scan does find things

    with runtime.sessions() as session:
        sub = session.scalar(select(Subscriber))
    prefs = path(links.preferences_url(app.settings, sub))
    page = client.get(prefs + "/erase").get_data(as_text=True)
    done = client.post(prefs + "/erase", data={"csrf_token": csrf_token(page)})
    assert done.status_code == 200 and "Your data has been deleted" in done.get_data(as_text=True)

    assert (
        scan_all_tables(runtime, ["Zoe.Private@example.com", "Zoedora", "zoe.private", "203.0.113.7"]) == []
    )
    with runtime.sessions() as session:
        entry = session.scalar(select(Suppression))
        assert entry.email_hash == address_hash("Zoe.Private@example.com") and entry.reason == "erased"
        ledger = list(session.scalars(select(ConsentEvent).order_by(ConsentEvent.id)))
    assert [e.action for e in ledger] == ["signup_requested", "confirmed", "erased"]
    assert all(e.ip in (None, "0.0.0.0") and e.user_agent is None for e in ledger)
    assert ledger[0].wording_hash  # the evidence of consent survives, without the person

    # Old links now lead nowhere, without a 500.
    assert client.get(prefs).status_code == 410
    assert (
        client.post(
            path(links.unsubscribe_url(app.settings, sub)), data={"List-Unsubscribe": "One-Click"}
        ).status_code
        == 200
    )

    # Coming back takes a fresh double opt-in, which lifts the suppression.
    signup("zoe.private@example.com", topics=["newsletter"])
    work()
    link = path(confirm_link(smtp_sink.take()[0]))
    client.post(link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))})
    with runtime.sessions() as session:
        assert session.scalar(select(Suppression)) is None
        assert (
            session.scalar(select(Subscriber).where(Subscriber.status == "active")).email
            == "zoe.private@example.com"
        )


def test_complaint_blocks_even_a_confirmation_until_an_operator_lifts_it(
    app, signup, runtime, work, smtp_sink
):
    env = env_for(app)
    runner = CliRunner()
    added = runner.invoke(
        cli, ["suppressions", "add", "Angry@example.com", "--reason", "complained"], env=env
    )
    assert added.exit_code == 0, added.output
    response = signup("angry@example.com")
    assert "Check your inbox" in response.get_data(as_text=True)  # same answer, no enumeration
    work()
    assert smtp_sink.take() == []
    with runtime.sessions() as session:
        event = session.scalar(select(ConsentEvent))
        assert event.details == {"email": "not sent: suppressed (complained)"}
    assert runner.invoke(cli, ["suppressions", "remove", "angry@example.com"], env=env).exit_code == 0
    signup("angry@example.com")
    work()
    assert len(smtp_sink.take()) == 1


def test_unsubscribed_address_gets_a_confirmation_for_a_fresh_opt_in(
    app, client, runtime, work, smtp_sink, make_subscriber, signup
):
    sub = make_subscriber("back@example.com")
    client.post(path(links.unsubscribe_url(app.settings, sub)), data={"List-Unsubscribe": "One-Click"})
    signup("back@example.com")
    work()
    [mail] = smtp_sink.take()
    assert "confirm" in mail["Subject"].lower()


def test_suppressions_cli_import_export_list(app, tmp_path):
    env = env_for(app)
    runner = CliRunner()
    good = tmp_path / "good.csv"
    good.write_text(
        f'email,reason,note\nA@example.com,bounced,=HYPERLINK("x")\n{"f" * 64},manual,\nb@example.com,,\n',
        "utf-8",
    )
    result = runner.invoke(cli, ["suppressions", "import", str(good)], env=env)
    assert result.exit_code == 0, result.output
    assert "3 added" in result.output
    again = runner.invoke(cli, ["suppressions", "import", str(good)], env=env)
    assert "0 added, 3 already suppressed" in again.output

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "email,reason\nc@example.com,manual\nnot-an-address,manual\nd@example.com,angry\n", "utf-8"
    )
    result = runner.invoke(cli, ["suppressions", "import", str(bad)], env=env)
    assert result.exit_code == 1
    assert "line 3: 'not-an-address'" in result.output and "line 4: unknown reason 'angry'" in result.output
    assert "nothing imported" in result.output

    latin = tmp_path / "latin.csv"
    latin.write_bytes("email\nj\xfcrgen@example.com\n".encode("latin-1"))
    result = runner.invoke(cli, ["suppressions", "import", str(latin)], env=env)
    assert result.exit_code == 1 and "not UTF-8 text" in result.output

    out = tmp_path / "export.csv"
    assert runner.invoke(cli, ["suppressions", "export", "--out", str(out)], env=env).exit_code == 0
    exported = out.read_text("utf-8")
    assert address_hash("a@example.com") in exported and "c@example.com" not in exported
    assert "'=HYPERLINK" in exported  # a formula never reaches a spreadsheet as a formula
    listing = runner.invoke(cli, ["suppressions", "list"], env=env).output
    assert len(listing.strip().splitlines()) == 3


def test_subscribers_export_and_erase_cli(app, runtime, make_subscriber, tmp_path):
    env = env_for(app)
    make_subscriber("cli@example.com", first_name="Clio")
    runner = CliRunner()
    out = tmp_path / "me.json"
    result = runner.invoke(cli, ["subscribers", "export", "cli@example.com", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["first_name"] == "Clio"
    result = runner.invoke(cli, ["subscribers", "erase", "cli@example.com", "--yes"], env=env)
    assert result.exit_code == 0 and "erased subscriber" in result.output
    assert scan_all_tables(runtime, ["cli@example.com", "Clio"]) == []
    gone = runner.invoke(cli, ["subscribers", "show", "cli@example.com"], env=env)
    assert gone.exit_code == 1 and "no subscriber" in gone.output
