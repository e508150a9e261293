"""``newsletter --help`` starts fast: no heavy module is imported until a command runs.

The check is on the set of modules a fresh interpreter imports (``python -X importtime``),
not on time, so it holds on a busy machine. bench/cli.py has the figures.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent

#: what a command may import when it runs, but no ``--help`` may pay for
HEAVY = (
    "flask",
    "werkzeug",
    "jinja2",
    "flask_wtf",
    "wtforms",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "redis",
    "rq",
    "mjml",
    "premailer",
    "cssutils",
    "lxml",
    "playwright",
    "email_validator",
    "itsdangerous",
    "dkim",
    "dns",
    "cryptography",
    "nacl",
    "newsletter.models",
    "newsletter.core.db",
    "newsletter.core.runtime",
)


def heavy(modules) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def imported_by(*argv: str) -> tuple[set[str], str]:
    """The modules ``python -X importtime -m newsletter ARGV`` imports, and its output."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "newsletter", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2 and "cumulative" not in line
    }
    return names, done.stdout


def test_the_import_reader_sees_imports():
    names, _ = imported_by("--version")
    assert {"click", "newsletter.cli"} <= names


@pytest.mark.parametrize(
    "group", [""] + sorted(name for name, cmd in cli.commands.items() if isinstance(cmd, click.Group))
)
def test_help_of_the_top_level_and_each_group_imports_nothing_heavy(group):
    argv = [group, "--help"] if group else ["--help"]
    names, out = imported_by(*argv)
    assert "Usage:" in out
    assert heavy(names) == [], f"newsletter {' '.join(argv)} imports {heavy(names)}"


def test_help_of_every_command_imports_nothing_heavy():
    """Every command's --help, in one fresh interpreter, none of them loading a heavy module."""
    script = """
import json, sys
import click
from click.testing import CliRunner
from newsletter.cli import cli

def walk(group, path):
    for name, cmd in sorted(group.commands.items()):
        yield path + [name]
        if isinstance(cmd, click.Group):
            yield from walk(cmd, path + [name])

report = {}
for path in walk(cli, []):
    result = CliRunner().invoke(cli, path + ["--help"])
    assert result.exit_code == 0, (path, result.output)
    report[" ".join(path)] = sorted(sys.modules)
print(json.dumps(report))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {"campaign schedule", "partners import", "db upgrade"} <= set(report)
    wrong = {path: heavy(mods) for path, mods in report.items()}
    assert {path: mods for path, mods in wrong.items() if mods} == {}


def test_version_is_the_packages_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    assert importlib.metadata.version("newsletter") == project["version"]
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"newsletter {project['version']}\n"
