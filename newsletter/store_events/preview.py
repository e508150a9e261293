"""``newsletter events preview``: one kind's store mail, built as a worker builds it, written to files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from newsletter.core.config import Settings
from newsletter.mail.message import POLICY, preview_files
from newsletter.models import OutboxKind, StoreEvent
from newsletter.store_events.check import sample_event
from newsletter.store_events.events import problems_of


class BadPreview(ValueError):
    """The event given cannot be previewed as that kind (one line each in ``problems``)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def event_for(kind: str, given: Any | None) -> StoreEvent:
    """The sample event of ``kind``, or ``given`` (a decoded JSON event) once the schema accepts it."""
    if given is None:
        return sample_event(kind)
    found = problems_of(0, given)
    if found:
        raise BadPreview([p.removeprefix("events[0]") for p in found])
    if given["kind"] != kind:
        raise BadPreview([f"the event is a {given['kind']}, not a {kind}"])
    return StoreEvent(kind=kind, email=given["email"], payload=given)


def write_preview(settings: Settings, kind: str, event: StoreEvent, out: Path) -> tuple[str, list[Path]]:
    """Write KIND.eml, .html, .txt and .subject.txt into ``out``; returns (subject, paths)."""
    from newsletter.subscribers.transactional import build_store_mail

    message = build_store_mail(settings, OutboxKind(kind), event)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    files = {
        **preview_files(message.as_bytes(policy=POLICY)),
        ".subject.txt": f"{message['Subject']}\n".encode(),
    }
    for suffix, content in files.items():
        path = out / f"{kind}{suffix}"
        path.write_bytes(content)
        written.append(path)
    return str(message["Subject"]), written
