"""``pip install .`` (not editable) gives a working engine: code, templates and migrations.

The wheel test installs the project into a fresh virtualenv with pip (non-editable, build
isolation as a user's ``pip install .`` has it: setuptools comes from PyPI), then runs
``newsletter init``, ``db upgrade`` and ``demo`` from an empty folder outside the repository.
The dependencies are not downloaded again: a ``.pth`` file lends the fresh virtualenv the test
environment's site-packages. A ``.pth`` entry is only added to ``sys.path`` (its own ``.pth``
files, among them the editable install's finder, are not run), so ``newsletter`` itself can
only come from the wheel; the test checks that it does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
COPY_IGNORES = shutil.ignore_patterns(
    ".git", ".venv", "instance", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests"
)


def _files(folder: Path) -> set[str]:
    found = (p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {str(p.relative_to(folder)) for p in found}


def test_every_package_is_listed_in_pyproject():
    """pyproject.toml lists the packages (templates/ is mapped in), so a new one must be added there."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "newsletter").rglob("__init__.py")
    }
    assert listed == on_disk | {"newsletter.templates"}


@pytest.mark.wheel
def test_a_wheel_install_runs_the_demo_from_an_empty_folder(tmp_path, redis_conn):
    source, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORES)  # the build writes build/ and *.egg-info beside it
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", source],
        check=True,
        timeout=600,
    )
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_env_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")

    installed = site / "newsletter"
    assert _files(ROOT / "templates") <= _files(installed / "templates")
    assert _files(ROOT / "newsletter" / "migrations") <= _files(installed / "migrations")

    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_REDIS_URL"] = REDIS_URL  # this test's own database (flushed by redis_conn)

    def newsletter(*args: str) -> str:
        command = [venv / "bin" / "newsletter", *args]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    where = subprocess.run(
        [python, "-c", "import newsletter.mail.templates as t; print(t.__file__); print(t.TEMPLATES)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's code, not the checkout's

    assert newsletter("--version").startswith("newsletter ")
    newsletter("init")
    newsletter("db", "upgrade")
    out = newsletter("demo")
    assert "an RQ worker (burst mode) delivered the queued confirmation email" in out
    assert "confirmed with one POST from the email's link" in out
    assert (work / "instance" / "config.toml").is_file()
    assert list((work / "instance" / "outbox" / "new").iterdir())
