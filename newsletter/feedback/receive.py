"""One report in: parse it, record its signal, commit (each report on its own), say what happened."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.core.config import Settings
from newsletter.feedback.parse import parse
from newsletter.feedback.record import record

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one report."""

    #: "recorded", "duplicate", "unmatched", "ignored" or "refused"
    status: str
    #: one line: the signal recorded and what it did, or why nothing was
    detail: str


def take_report(
    sessions, settings: Settings, raw: bytes, *, source: str, envelope_to: Sequence[str] = ()
) -> Outcome:
    """Parse one raw report and record what it says in one transaction; database errors propagate."""
    report = parse(raw, settings, source=source, envelope_to=envelope_to)
    if not report.signals:
        status = "refused" if report.refused else "ignored"
        detail = report.reason if report.what == status else f"{report.what}: {report.reason}"
        return Outcome(status, detail)
    with sessions() as session:
        done = [record(session, settings, signal) for signal in report.signals]
        session.commit()
    recorded = [d for d in done if d.event_id is not None]
    if recorded:
        first = recorded[0]
        row = f"delivery {first.delivery_id}" if first.delivery_id else "transactional email"
        acted = f", suppressed ({first.suppressed.value})" if first.suppressed else ""
        paused = f", campaign paused: {first.paused}" if first.paused else ""
        return Outcome("recorded", f"{report.reason} on {row}{acted}{paused}")
    if all(d.duplicate for d in done):
        return Outcome("duplicate", f"{report.reason}: already recorded (same report)")
    return Outcome("unmatched", f"{report.reason}: names no message of ours")
