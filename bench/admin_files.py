"""The Campaign files list (/admin/files) against the command it mirrors.

    python bench/admin_files.py [--folders 30]

Copies the shipped example folders into a temporary campaigns folder until it holds --folders of
them, then prints, in one run on the same folders:
- ``folders.folder_states`` (what the list page computes): the first load, which validates and
  renders every folder, and a reload, which reuses each folder's report while its files are the same;
- the reference: ``validation.validate_folder`` over every folder, what ``newsletter campaign
  validate`` runs (once per folder, every time).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from render import SITE  # noqa: E402  (bench/render.py: the same site context)
from sqlalchemy.orm import Session  # noqa: E402

import newsletter.models  # noqa: E402, F401  (every table on the metadata)
from newsletter.campaigns import folders  # noqa: E402
from newsletter.campaigns.validation import find_campaigns, validate_folder  # noqa: E402
from newsletter.core import clock  # noqa: E402
from newsletter.core.db import Base, make_engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=30)
    args = parser.parse_args()
    examples = find_campaigns(ROOT / "campaigns")
    with tempfile.TemporaryDirectory(prefix="nl-bench-files-") as tmp:
        root = Path(tmp) / "campaigns"
        for i in range(args.folders):
            example = examples[i % len(examples)]
            shutil.copytree(example, root / f"{example.name}-{i:03d}")
        for example in examples:  # warm: templates compiled, modules imported (the list pays neither)
            validate_folder(example, SITE, clock.now())
        engine = make_engine(f"sqlite:///{tmp}/bench.sqlite3")
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            started = time.perf_counter()
            states = folders.folder_states(session, SITE, root)
            first = time.perf_counter() - started
            reloads = []
            for _ in range(5):
                started = time.perf_counter()
                folders.folder_states(session, SITE, root)
                reloads.append(time.perf_counter() - started)
        references = []
        for _ in range(2):
            started = time.perf_counter()
            for folder in find_campaigns(root):
                validate_folder(folder, SITE, clock.now())
            references.append(time.perf_counter() - started)
        engine.dispose()
    ok = sum(state.report.ok for state in states)
    print(f"{len(states)} folders ({ok} ok), copies of {', '.join(e.name for e in examples)}")
    each = first * 1000 / len(states)
    print(f"/admin/files list, first load: {first * 1000:.0f} ms ({each:.1f} ms a folder)")
    print(f"/admin/files list, reload (files unchanged): median {statistics.median(reloads) * 1000:.1f} ms")
    print(f"reference, validate_folder on each (campaign validate): {min(references) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
