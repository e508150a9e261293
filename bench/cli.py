"""Start-up time of the command line: ``newsletter --help`` and every group's ``--help``.

    python bench/cli.py [--runs 7] [--newsletter .venv/bin/newsletter]

Each line is the median over RUNS fresh processes, wall time (perf_counter) and CPU time
(user + system of the child), next to ``python -c "import click"`` measured in the same run
with the same interpreter, and the ratio of the two. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: commands measured besides the top level and its groups (the ones whose modules are heavy)
EXTRA = [["campaign", "schedule"], ["campaign", "preview"], ["partners", "import"], ["suppressions", "add"]]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of running ``argv`` to completion."""
    walls, cpus = [], []
    for _ in range(runs):
        cpu, start = _children_cpu(), time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "100"})
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def commands(newsletter: str) -> list[list[str]]:
    """The top level and each of its commands, read from ``newsletter --help``."""
    out = subprocess.run([newsletter, "--help"], check=True, capture_output=True, text=True).stdout
    listed = out.split("Commands:", 1)[1].splitlines()
    return [[]] + [[line.split()[0]] for line in listed if line.startswith("  ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    beside = Path(sys.executable).with_name("newsletter")  # the virtualenv's own command
    found = str(beside) if beside.exists() else shutil.which("newsletter")
    parser.add_argument("--newsletter", default=found)
    args = parser.parse_args()
    if not args.newsletter:
        sys.exit("no newsletter command found; pass --newsletter")

    base_wall, base_cpu = measure([sys.executable, "-c", "import click"], args.runs)
    label = 'python -c "import click"'
    print(f"{label:<36} wall {base_wall * 1000:6.0f} ms          cpu {base_cpu * 1000:6.0f} ms")
    print(f"median of {args.runs} runs; ratio = command / import click")
    for path in commands(args.newsletter) + EXTRA:
        wall, cpu = measure([args.newsletter, *path, "--help"], args.runs)
        label = " ".join(["newsletter", *path, "--help"])
        print(
            f"{label:<36} wall {wall * 1000:6.0f} ms ({wall / base_wall:4.1f}x)"
            f"   cpu {cpu * 1000:6.0f} ms ({cpu / base_cpu:4.1f}x)"
        )


if __name__ == "__main__":
    main()
