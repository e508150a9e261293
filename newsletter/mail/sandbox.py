"""The one Jinja sandbox for email files (campaign folders and templates/email), and where its errors are.

Jinja reports a line but no column; ``template_error`` finds the column in the file's own line
(the token the message names, the unclosed block, the undefined name), so every caller can say
``file:line:col`` like a compiler.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from newsletter.mail.skeleton import SLOT, slot_token


class PersonalValue(str):
    """A slot token standing for a value only known per recipient."""

    def __bool__(self) -> bool:
        raise TypeError(
            "personal values (subscriber.*, links.*) are only known when sending: print them "
            "(with a fallback: {{ subscriber.first_name or 'there' }}), do not test them with if"
        )

    def with_fallback(self, fallback: Any) -> PersonalValue:
        """The same value, with text to use when it is empty for a recipient."""
        match = SLOT.fullmatch(self)
        assert match is not None
        return PersonalValue(slot_token(match.group(1), fallback=str(fallback)))


class MailEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, where ``personal or "fallback"`` keeps the fallback for sending time."""

    intercepted_binops = frozenset(["or"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "or":
            return left.with_fallback(right) if isinstance(left, PersonalValue) else left or right
        return super().call_binop(context, operator, left, right)


class Missing(StrictUndefined):
    """A variable that is documented but absent here (``reward`` without ``[reward]``): false in an
    ``if``, an error with its hint when printed or looked into."""

    def __bool__(self) -> bool:
        return False


def missing(name: str, hint: str) -> Missing:
    return Missing(hint=hint, name=name)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's default filter, keeping the fallback of a personal value for sending time."""
    if isinstance(value, PersonalValue):
        return value.with_fallback(default_value)
    return default_value if isinstance(value, Undefined) or (boolean and not value) else value


def sandbox(loader: BaseLoader) -> MailEnvironment:
    """``.mjml`` autoescaped as HTML, ``.txt`` not; an undefined name is an error, never empty text.

    ``{% trans %}`` and ``_()`` are there (jinja2.ext.i18n, newstyle: a translated string is escaped
    like any other value); untranslated until a caller installs a language's catalog."""
    env = MailEnvironment(
        loader=loader,
        extensions=["jinja2.ext.i18n"],
        autoescape=select_autoescape(enabled_extensions=("mjml", "html"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["default"] = env.filters["d"] = _default
    env.install_null_translations(newstyle=True)
    return env


@dataclass(frozen=True)
class TemplateProblem:
    """Where a template failed: ``file`` is the path Jinja loaded (or the caller's default)."""

    file: str
    line: int
    col: int
    message: str


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


_TAG = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)|\{#.*?(?:#\}|$)")
_BLOCKS = ("if", "for", "block", "macro", "call", "filter", "set", "with", "raw", "trans", "autoescape")


def _in_tags(line: str, needle: re.Pattern) -> int | None:
    """Column of the first match of ``needle`` inside a Jinja tag of ``line`` (None if none): between
    the delimiters first (a stray ``}`` is not the ``%}`` of the tag before it), then anywhere in one."""
    tags = list(_TAG.finditer(line))
    for inner in (True, False):
        for tag in tags:
            closed = tag.group()[-2:] in ("}}", "%}", "#}")
            start, end = (tag.start() + 2, tag.end() - 2 * closed) if inner else (tag.start(), tag.end())
            found = needle.search(line, start, max(start, end))
            if found:
                return found.start() + 1
    return None


def _needle(message: str) -> re.Pattern | None:
    """What the message names, as it is written in the template."""
    attribute = re.search(r"has no attribute '(\w+)'|access to attribute '(\w+)'", message)
    if attribute:
        name = re.escape(attribute.group(1) or attribute.group(2))
        written = rf"[A-Za-z_][\w.]*\.{name}\b|[A-Za-z_][\w.]*\[\s*['\"]{name}['\"]"
        return re.compile(rf"{written}|\.{name}\b")  # the dot alone after a literal: ''.__class__
    undefined = re.search(r"^'(\w+)' is (?:undefined|empty)", message)
    if undefined:
        return re.compile(rf"(?<![\w.'\"]){re.escape(undefined.group(1))}\b")
    tag = re.search(r"unknown tag '(\w+)'", message)
    if tag:
        return re.compile(rf"\{{%-?\s*{re.escape(tag.group(1))}\b")
    ending = {"end of print statement": r"\}\}", "end of statement block": r"%\}"}
    token = re.search(r"(?:unexpected|got) '([^']+)'", message) or re.search(r"unexpected \"(')\"", message)
    if token:
        text = token.group(1)
        return re.compile(ending.get(text, re.escape(text)))
    return None


def _unclosed(source: str, block: str) -> tuple[int, int] | None:
    """Where the innermost ``{% block %}`` without its ``{% endblock %}`` opens."""
    opened: list[int] = []
    for match in re.finditer(rf"\{{%-?\s*(end)?{block}\b", source):
        if match.group(1):
            if opened:
                opened.pop()
        else:
            opened.append(match.start())
    return position(source, opened[-1]) if opened else None


def locate(source: str | None, line: int, message: str) -> tuple[int, int]:
    """Line and column in ``source`` of an error Jinja placed on ``line`` and described by ``message``."""
    if not source:
        return line, 1
    offset = re.search(r"unexpected char .+ at (\d+)$", message)
    if offset:
        return position(source, int(offset.group(1)))
    block = re.search(r"innermost block that needs to be closed is '(\w+)'", message)
    if block and block.group(1) in _BLOCKS:
        found = _unclosed(source, block.group(1))
        if found:
            return found
    lines = source.splitlines() or [""]
    text = lines[min(max(line, 1), len(lines)) - 1]
    needle = _needle(message)
    col = _in_tags(text, needle) if needle else None
    if col is None:
        first = _TAG.search(text)
        col = first.start() + 1 if first else len(text) - len(text.lstrip()) + 1
    return line, col


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _inside(file: str, roots: tuple[str, ...]) -> bool:
    return any(file == root or file.startswith(root.rstrip("/") + "/") for root in roots)


def template_error(
    exc: Exception, default_file: str, roots: tuple[str, ...], source: str | None = None
) -> TemplateProblem:
    """Where in which template file (under ``roots``) an exception happened, with its column.

    Jinja keeps template lines in tracebacks; the innermost template frame is where it failed.
    ``source`` is the text of ``default_file`` when it is not a file (a template string).
    """
    if isinstance(exc, TemplateSyntaxError):
        file = exc.filename or default_file
        text = source if file == default_file and source is not None else exc.source or _read(file)
        line, col = locate(text, exc.lineno or 1, exc.message or "")
        return TemplateProblem(file, line, col, f"Jinja: {exc.message}")
    line, file = 1, default_file
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == default_file or _inside(frame.filename, roots):
            file, line = frame.filename, frame.lineno or 1
    kind = type(exc).__name__
    message = str(exc) if isinstance(exc, TemplateError) else f"{kind}: {exc}"
    if kind == "SecurityError":
        message = f"not allowed in a campaign: {exc}"
    text = source if file == default_file and source is not None else _read(file)
    named = isinstance(exc, UndefinedError) or kind == "SecurityError"  # messages that name the culprit
    line, col = locate(text, line, str(exc) if named else "")
    return TemplateProblem(file, line, col, message)
