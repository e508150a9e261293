"""First names: the one check every path that stores a name goes through (forms, imports, partners).

A name ends up in email bodies and, through campaigns, anywhere a marketer puts it, so it must
never carry a line break of any kind or a character that reorders the text around it.

Refused: every control character (Unicode category Cc: C0, DEL and C1, which include U+0085
NEXT LINE), the line and paragraph separators (Zl U+2028, Zp U+2029), lone surrogates (Cs) and
the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which can
make a name display as something else. Other format characters (Cf) are allowed: the zero-width
joiner and non-joiner belong to the spelling of names in Persian and Indic scripts and to emoji.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 100
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: What the forms say; one sentence, no jargon.
FORM_MESSAGES = {
    "length": f"Please keep your first name to at most {MAX_LENGTH} characters.",
    "characters": "Please write your first name on one line, without line breaks or special characters.",
}


class InvalidName(ValueError):
    """The name cannot be stored; the message says why (for logs, imports and partners)."""


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a first name, in a few words (None if it can)."""
    if len(value) > MAX_LENGTH:
        return f"longer than {MAX_LENGTH} characters ({len(value)})"
    if any(ch in _BIDI_CONTROLS or unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in value):
        return "contains a line break, a control character or a text direction override"
    return None


def form_problem(value: str) -> str | None:
    """``name_problem`` as a key of ``FORM_MESSAGES`` (the forms translate it), None if it is fine."""
    problem = name_problem(value)
    if problem is None:
        return None
    return "length" if problem.startswith("longer") else "characters"


def form_message(value: str) -> str | None:
    """``name_problem`` as the person filling a form should read it (in English)."""
    key = form_problem(value)
    return FORM_MESSAGES[key] if key else None


def clean_first_name(raw: str | None) -> str | None:
    """The name to store (stripped; None if empty), or InvalidName."""
    value = (raw or "").strip()
    if not value:
        return None
    if problem := name_problem(value):
        raise InvalidName(f"first name {problem}")
    return value
