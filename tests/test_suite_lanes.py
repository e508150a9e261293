"""The suite's own wiring: each xdist worker on its own Redis databases, named by the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import redis_pairs_problem, worker_redis_urls

ROOT = Path(__file__).parent.parent


def test_each_worker_gets_its_own_pair_counting_down():
    urls = [worker_redis_urls("redis://h:1/15", "redis://h:1/14", i) for i in range(3)]
    assert urls == [
        ("redis://h:1/15", "redis://h:1/14"),
        ("redis://h:1/13", "redis://h:1/12"),
        ("redis://h:1/11", "redis://h:1/10"),
    ]
    assert redis_pairs_problem("redis://h:1/15", "redis://h:1/14", 8) is None
    assert "9 test workers need 9 separate pairs" in redis_pairs_problem(
        "redis://h:1/15", "redis://h:1/14", 9
    )
    assert redis_pairs_problem("redis://h:1/15", "redis://h:1/13", 2)  # gw1's A would be gw0's B


def test_xdist_workers_use_the_databases_given_in_the_environment(tmp_path):
    """The controller must leave NEWSLETTER_TEST_REDIS_URL in place for the workers it starts."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n"
        "from tests.conftest import REDIS_URL, REDIS_URL_B\n"
        "def test_where():\n"
        "    print('WHERE', os.environ['PYTEST_XDIST_WORKER'], REDIS_URL, REDIS_URL_B)\n"
        "    assert REDIS_URL.endswith('/11') and REDIS_URL_B.endswith('/10')\n"
    )
    env = {
        **os.environ,
        "NEWSLETTER_TEST_REDIS_URL": "redis://127.0.0.1:1/11",
        "NEWSLETTER_TEST_REDIS_URL_B": "redis://127.0.0.1:1/10",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "1",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",  # the controller loads it too, as `make test` does
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
            "--confcutdir",
            str(ROOT),
            str(probe),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
