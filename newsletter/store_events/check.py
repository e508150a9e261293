"""Store mail stays transactional: each kind's files render with a sample event and carry no marketing.

Every problem of every kind is found in one run, each as ``templates/email/<file>:line:col: reason``:
a missing file, Jinja syntax errors and undefined names (the campaign sandbox's own locations),
MJML that mjml-python refuses (pointed at the tag it chokes on when the file shows it), a
``.txt`` without its ``Subject:`` line, and marketing wording where the file writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from jinja2 import meta
from mjml import mjml2html

from newsletter.core.config import Settings
from newsletter.mail import templates
from newsletter.mail.mjml_source import unbalanced, unknown_tags
from newsletter.mail.sandbox import position, template_error
from newsletter.models import StoreEvent
from newsletter.models.outbox import STORE_KINDS
from newsletter.store_events.schema import KINDS

#: what marks marketing in an email: early-access links, sale wording, discount offers
MARKETING = re.compile(
    r"/early-access/|\bearly[ -]access\b|\bsale\b|\d+ ?% off\b|\bpromo(tion)? code\b", re.I
)

#: every field an event may carry, with a plausible value; each kind's sample takes its own
SAMPLE = {
    "event_id": "sample",
    "email": "customer@example.com",
    "first_name": "Ann",
    "order_id": "1001",
    "order_url": "https://shop.example/orders/1001",
    "tracking_url": "https://carrier.example/1001",
    "new_date": "2026-12-24",
    "reason": "the supplier is late",
    "item": "Blue teapot",
    "url": "https://shop.example/blue-teapot",
    "alternatives": [{"name": "Green teapot", "url": "https://shop.example/green-teapot"}],
}


#: the thank-you is checked with its one-time newsletter invitation, which must not sell either
INVITE = {"order_placed": "https://news.example/join/sample"}


@dataclass(frozen=True)
class FileProblem:
    file: str  #: relative to the templates folder's parent: ``templates/email/order_placed.txt``
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


def sample_event(kind: str) -> StoreEvent:
    """An event of ``kind`` with the fields that kind requires (the schema's) and the optional ones:
    a template reading another kind's required field fails here as it would when sending."""
    from newsletter.subscribers.transactional import STORE_OPTIONAL

    fields = {"event_id", "email", "first_name", *KINDS[kind]["required"], *STORE_OPTIONAL}
    payload = {key: value for key, value in SAMPLE.items() if key in fields}
    return StoreEvent(kind=kind, email=SAMPLE["email"], payload={**payload, "kind": kind})


def _shown(path: Path | str) -> str:
    return f"templates/email/{Path(path).name}"


def _parents(name: str, seen: set[str]) -> list[str]:
    """``name`` and every template it extends or includes (literal names), each once."""
    env = templates.email_environment()
    if name in seen:
        return []
    seen.add(name)
    try:
        source = env.loader.get_source(env, name)[0]
        referenced = [n for n in meta.find_referenced_templates(env.parse(source)) if n]
    except Exception:  # noqa: BLE001 - a missing or broken parent is reported where it is used
        return [name]
    return [name] + [p for ref in referenced for p in _parents(ref, seen)]


def _marketing(path: Path) -> list[FileProblem]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [
        FileProblem(_shown(path), *position(text, m.start()), f"marketing in store mail: {m.group(0)!r}")
        for m in MARKETING.finditer(text)
    ]


def _render(name: str, context: dict, settings: Settings) -> tuple[str | None, list[FileProblem]]:
    """One file rendered, or its first failure located in whichever template it happened."""
    folder = templates.email_folder()
    try:
        return templates.email_environment(settings).get_template(name).render(context), []
    except Exception as exc:  # noqa: BLE001 - every template failure becomes a located problem
        found = template_error(exc, str(folder / name), (str(folder),))
        message = found.message.replace("not allowed in a campaign", "not allowed in an email")
        return None, [FileProblem(_shown(found.file), found.line, found.col, message)]


def _mjml(name: str, rendered: str) -> list[FileProblem]:
    """mjml-python's refusal, pointed at the first file of the chain whose tags do not pair up."""
    try:
        mjml2html(rendered)
        return []
    except ValueError as exc:
        reason = str(exc)
    folder = templates.email_folder()
    for file in _parents(name, set()):
        text = (folder / file).read_text("utf-8") if (folder / file).is_file() else ""
        found = unbalanced(text)
        if found:
            line, col, why = found
            return [FileProblem(_shown(file), line, col, f"MJML: {why} ({reason})")]
    return [FileProblem(_shown(name), 1, 1, f"MJML: {reason}")]


def kind_problems(settings: Settings, kind: str) -> list[FileProblem]:
    """Every problem of one kind's files (and of the files they extend)."""
    from newsletter.subscribers.transactional import store_context

    folder = templates.email_folder()
    context = store_context(settings, sample_event(kind), invite_url=INVITE.get(kind))
    found: list[FileProblem] = []
    rendered: dict[str, str] = {}
    for ext in ("mjml", "txt"):
        name = f"{kind}.{ext}"
        if not (folder / name).is_file():
            found.append(
                FileProblem(_shown(name), 1, 1, f"missing: every store kind needs {kind}.mjml and {kind}.txt")
            )
            continue
        for file in _parents(name, set()):
            found += _marketing(folder / file)
            if file.endswith(".mjml"):
                text = (folder / file).read_text("utf-8") if (folder / file).is_file() else ""
                found += [
                    FileProblem(_shown(file), line, col, f"unknown MJML tag <{tag}>")
                    for line, col, tag in unknown_tags(text)
                ]
        output, failed = _render(name, context, settings)
        found += failed
        if output is not None:
            rendered[ext] = output
    if "txt" in rendered and not rendered["txt"].startswith("Subject: "):
        found.append(FileProblem(_shown(f"{kind}.txt"), 1, 1, "the first line must be 'Subject: ...'"))
    if "mjml" in rendered:
        found += _mjml(f"{kind}.mjml", rendered["mjml"])
    written = {p.message for p in found if p.message.startswith("marketing")}
    for ext, output in rendered.items():
        for match in MARKETING.finditer(output):
            message = f"marketing in store mail: {match.group(0)!r}"
            if message not in written:  # made by Jinja, not written as such: say where it lands
                found.append(FileProblem(_shown(f"{kind}.{ext}"), 1, 1, f"{message} (in the rendered email)"))
                written.add(message)
    return found


def problems(settings: Settings) -> list[str]:
    """``templates/email/<file>:line:col: reason`` for every problem of every store kind, each once."""
    found = [p for kind in sorted(k.value for k in STORE_KINDS) for p in kind_problems(settings, kind)]
    return list(dict.fromkeys(str(p) for p in found))
