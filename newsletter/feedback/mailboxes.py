"""``bounces import``: reports from an mbox file, a Maildir folder, or .eml files (or a folder of them)."""

from __future__ import annotations

import mailbox
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from newsletter.core.config import Settings
from newsletter.feedback.parse import MAX_SIZE
from newsletter.feedback.receive import Outcome, take_report


@dataclass
class Summary:
    """What an import did: counts by outcome, and each refusal or ignore by message."""

    counts: Counter = field(default_factory=Counter)
    notes: list[tuple[str, Outcome]] = field(default_factory=list)

    def line(self) -> str:
        parts = ("recorded", "duplicate", "unmatched", "ignored", "refused")
        return ", ".join(f"{self.counts[p]} {p}" for p in parts)


def messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) of every message under PATH, in a stable order."""
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.keys()):
            yield f"{path}/{key}", box.get_bytes(key)
    elif path.is_dir():
        for item in sorted(p for p in path.iterdir() if p.is_file()):
            yield from messages(item)
    elif _is_mbox(path):
        box = mailbox.mbox(path, factory=None, create=False)
        try:
            for number, key in enumerate(box.keys(), 1):
                yield f"{path}#{number}", box.get_bytes(key)
        finally:
            box.close()
    else:
        with path.open("rb") as handle:
            yield str(path), handle.read(MAX_SIZE + 1)  # more than the limit: refused, never read whole


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def import_reports(sessions, settings: Settings, paths: list[Path]) -> Summary:
    """Parse and record every message; each report is committed on its own."""
    summary = Summary()
    for path in paths:
        for label, raw in messages(path):
            outcome = take_report(sessions, settings, raw, source="import")
            summary.counts[outcome.status] += 1
            if outcome.status in ("refused", "ignored", "unmatched"):
                summary.notes.append((label, outcome))
    return summary
