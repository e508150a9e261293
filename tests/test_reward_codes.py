"""Reward codes: pools imported from the store's files, generated codes the store can check."""

from __future__ import annotations

from datetime import date

from click.testing import CliRunner
from sqlalchemy import func, select

from newsletter.campaigns import rewards
from newsletter.cli import cli
from newsletter.models import RewardCode
from tests.test_cli import env_for


def pool_codes(runtime, pool: str) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(select(RewardCode.code).where(RewardCode.pool == pool).order_by(RewardCode.id))
        )


def test_import_reports_duplicates_and_blanks_and_list_counts_the_pool(app, runtime, tmp_path):
    path = tmp_path / "gift.csv"
    path.write_text("code,value\nGIFT-1,10\n\nGIFT-2,10\nGIFT-1,10\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(path)], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert "2 added to pool gift, 1 duplicates skipped, 1 blank lines" in result.output
    assert f"{path}:5: duplicate of line 2: GIFT-1" in result.output
    assert pool_codes(runtime, "gift") == ["GIFT-1", "GIFT-2"]

    again = tmp_path / "more.txt"
    again.write_text("GIFT-2\nGIFT-3\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(again)], env=env_for(app))
    assert "1 added to pool gift, 1 duplicates skipped" in result.output
    assert f"{again}:1: already in pool gift: GIFT-2" in result.output

    result = CliRunner().invoke(cli, ["codes", "list"], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split() == ["gift", "3", "0", "3", "0"]


def test_a_bad_code_refuses_the_whole_file(app, runtime, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("OK-1\n" + "X" * 201 + "\nOK-2\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(path)], env=env_for(app))
    assert result.exit_code == 1
    assert f"{path}:2: not a code" in result.output
    assert "Traceback" not in result.output
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RewardCode)) == 0
    result = CliRunner().invoke(cli, ["codes", "import", "Bad Name!", str(path)], env=env_for(app))
    assert result.exit_code == 1 and "pool name" in result.output


def test_generated_code_verifies_and_an_altered_one_does_not(app):
    settings = app.settings
    code = rewards.make_code(settings, "VIP", 42, date(2030, 1, 31))
    assert code == rewards.make_code(settings, "VIP", 42, date(2030, 1, 31))  # deterministic
    assert rewards.verify_code(settings, code, date(2030, 1, 31)).status == "valid"
    assert rewards.verify_code(settings, code.lower(), date(2030, 1, 1)).status == "valid"
    assert rewards.verify_code(settings, code, date(2030, 2, 1)).status == "expired"
    prefix, delivery, expires, mac = code.split("-")
    for altered in (
        f"{prefix}-43-{expires}-{mac}",
        f"{prefix}-{delivery}-20991231-{mac}",
        f"{prefix}-{delivery}-{expires}-{'A' if mac[0] != 'A' else 'B'}{mac[1:]}",
        "nonsense",
        "",
    ):
        assert rewards.verify_code(settings, altered, date(2030, 1, 1)).status == "unknown", altered
