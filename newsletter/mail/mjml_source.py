"""What can be said about an MJML file before Jinja runs: unknown tags, and the tag MJML chokes on.

mjml-python's errors carry no position ("unexpected end of stream"), and they describe the
rendered text, not the file; these scans point into the file itself. Jinja tags are blanked
(same length) first, so positions stay the file's own.
"""

from __future__ import annotations

import re

from newsletter.mail.sandbox import position

MJML_TAGS = set(
    "mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font mj-html-attributes "
    "mj-html-attribute mj-selector mj-preview mj-style mj-title mj-accordion mj-accordion-element "
    "mj-accordion-title mj-accordion-text mj-button mj-carousel mj-carousel-image mj-column mj-divider "
    "mj-group mj-hero mj-image mj-navbar mj-navbar-link mj-raw mj-section mj-social mj-social-element "
    "mj-spacer mj-table mj-text mj-wrapper".split()
)
_OPEN = re.compile(r"<(mj-[A-Za-z0-9-]+|mjml)\b[^>]*>?")
_ANY = re.compile(r"<(/?)(mj-[A-Za-z0-9-]+|mjml)\b[^>]*?(/?)>", re.IGNORECASE)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def without_jinja(text: str) -> str:
    """``text`` with every Jinja tag replaced by as many spaces (newlines kept)."""
    return _JINJA.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def unknown_tags(text: str) -> list[tuple[int, int, str]]:
    """(line, col, tag) of every MJML-looking tag MJML does not know."""
    found = []
    for match in _OPEN.finditer(text):
        tag = match.group(1).lower()
        if tag not in MJML_TAGS:
            found.append((*position(text, match.start()), tag))
    return found


def unbalanced(text: str) -> tuple[int, int, str] | None:
    """(line, col, reason) of the first MJML tag left open or closed out of turn; None if all pair up."""
    text = without_jinja(text)
    opened: list[tuple[str, int]] = []
    for match in _ANY.finditer(text):
        closing, tag, self_closed = match.group(1), match.group(2).lower(), match.group(3)
        if self_closed:
            continue
        if not closing:
            opened.append((tag, match.start()))
        elif opened and opened[-1][0] == tag:
            opened.pop()
        else:
            expected = f"</{opened[-1][0]}> first" if opened else "no open tag"
            return (*position(text, match.start()), f"</{tag}> closes nothing open here ({expected})")
    if opened:
        tag, start = opened[-1]
        return (*position(text, start), f"<{tag}> is never closed")
    return None
