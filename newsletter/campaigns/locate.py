"""Columns for errors that come without one: Jinja's (a line only) and MJML's (no position at all)."""

from __future__ import annotations

import re

_OPENER = re.compile(r"\{\{|\{%|\{#")
_QUOTED = re.compile(r"'([^']+)'")
_INNERMOST = re.compile(r"innermost block that needs to be closed is '(\w+)'")
_TAG = re.compile(r"<(/?)(mj-[A-Za-z0-9-]+|mjml)\b[^>]*?(/?)>", re.IGNORECASE)
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def jinja_position(source: str, line: int, message: str) -> tuple[int, int]:
    """Where on ``line`` of ``source`` a Jinja error is: the token its message quotes, found after the
    line's first ``{{``/``{%``; else that opener; else the line's first character that is not blank.

    An unclosed block ("Unexpected end of template") points at the block's opening tag instead.
    """
    innermost = _INNERMOST.search(message)
    if innermost:
        openings = list(re.finditer(r"\{%-?\s*" + innermost.group(1) + r"\b", source))
        if openings:
            return position(source, openings[-1].start())
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return line, 1
    text = lines[line - 1]
    opener = _OPENER.search(text)
    start = opener.start() if opener else 0
    for quoted in reversed(_QUOTED.findall(message)):
        if quoted in ("dict object", "end of print statement", "end of statement block"):
            continue
        pattern = re.escape(quoted)
        if quoted[:1].isalnum() or quoted[:1] == "_":
            pattern = rf"(?<!\w){pattern}\b" if "." not in quoted else pattern
        found = re.compile(pattern).search(text, start) or re.compile(pattern).search(text)
        if found:
            return line, found.start() + 1
    if opener:
        return line, opener.start() + 1
    return line, len(text) - len(text.lstrip()) + 1


def unbalanced_tag(mjml: str) -> tuple[int, int, str] | None:
    """The first MJML tag of a source that is closed wrongly or never, with a message; None if balanced.

    Jinja tags are blanked out first (same length, so positions stay those of the campaign's file).
    """
    plain = _JINJA.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), mjml)
    plain = re.sub(r"<!--.*?-->", lambda m: re.sub(r"[^\n]", " ", m.group()), plain, flags=re.DOTALL)
    stack: list[tuple[str, int]] = []
    for match in _TAG.finditer(plain):
        closing, name, self_closing = match.group(1), match.group(2).lower(), match.group(3)
        if self_closing:
            continue
        if not closing:
            stack.append((name, match.start()))
            continue
        if stack and stack[-1][0] == name:
            stack.pop()
            continue
        if any(opened == name for opened, _ in stack):
            opened, at = stack[-1]
            return (*position(mjml, at), f"<{opened}> is not closed before </{name}>")
        return (*position(mjml, match.start()), f"</{name}> closes a tag that is not open")
    if stack:
        opened, at = stack[-1]
        return (*position(mjml, at), f"<{opened}> is never closed")
    return None
