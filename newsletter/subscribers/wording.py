"""The consent wording people are shown: versioned text files per language, never text in code.

Shipped: ``newsletter/wording/<kind>/<version>.<lang>.txt`` and ``<kind>/current`` (the version
shown now). The store's ``WORDING_DIR`` (default ``instance/wording``) has the same layout and its
files win. Everything is read and checked once, at start-up (a bad or missing file is one line
naming it); a signup then costs a dictionary look-up. The ledger keeps the version label
(``signup-2026-11``, ``signup-2026-11:de``) and the SHA-256 of the exact text shown
(docs/languages.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path

from newsletter.core.config import ConfigError, Settings
from newsletter.core.languages import SOURCE_LANGUAGE, shipped_languages
from newsletter.subscribers.consent import Wording

SHIPPED = Path(str(files("newsletter") / "wording"))

SIGNUP = "signup"
PARTNER_SHARE = "partner-share"
#: kind -> (placeholders it may use, placeholders it must use: a share names its partner, ICO)
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    SIGNUP: (frozenset({"store"}), frozenset()),
    PARTNER_SHARE: (frozenset({"partner"}), frozenset({"partner"})),
}
CURRENT = "current"
MAX_LENGTH = 2000
#: the label must fit consent_events.wording_version (50): kind (13) + "-" + version + ":" + lang
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,29}")
_PLACEHOLDER = re.compile(r"\{([^{}\n]*)\}")
_SPACE = re.compile(r"[ \t\r\n]+")  # ASCII only: a French text keeps its no-break spaces


class WordingError(ConfigError):
    """A wording file is missing or unusable; the message names the file."""


@dataclass(frozen=True)
class Catalog:
    """Every wording text found, and the version of each kind shown now."""

    #: (kind, version, language) -> the text with its placeholders
    texts: dict[tuple[str, str, str], str]
    #: kind -> version
    current: dict[str, str]


def label(kind: str, version: str, language: str) -> str:
    """The ledger's name of a text: ``signup-2026-11`` (English, as before languages) or ``...:de``."""
    base = f"{kind}-{version}"
    return base if language == SOURCE_LANGUAGE else f"{base}:{language}"


def parse_label(text: str | None) -> tuple[str, str, str] | None:
    """``label``'s inverse: (kind, version, language), or None for a label of no wording file."""
    base, _, language = (text or "").partition(":")
    for kind in KINDS:
        if base.startswith(kind + "-"):
            return kind, base[len(kind) + 1 :], language or SOURCE_LANGUAGE
    return None


def _read_text(path: Path, kind: str) -> str:
    try:
        raw = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise WordingError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise WordingError(f"{path}: cannot be read ({exc.strerror})") from None
    allowed, required = KINDS[kind]
    for number, line in enumerate(raw.splitlines(), 1):
        for match in _PLACEHOLDER.finditer(line):
            if match.group(1) not in allowed:
                names = ", ".join("{" + name + "}" for name in sorted(allowed))
                raise WordingError(
                    f"{path}:{number}:{match.start() + 1}: unknown placeholder {match.group(0)} "
                    f"(this kind may use {names})"
                )
    text = _SPACE.sub(" ", raw).strip()  # the page collapses white space: the hash is of what shows
    if not text:
        raise WordingError(f"{path}: empty")
    if len(text) > MAX_LENGTH:
        raise WordingError(f"{path}: longer than {MAX_LENGTH} characters ({len(text)})")
    for name in sorted(required):
        if "{" + name + "}" not in text:
            raise WordingError(f"{path}: must name {{{name}}}")
    return text


def _read_current(path: Path) -> str:
    try:
        version = path.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise WordingError(f"{path}: cannot be read as one line of text") from None
    if not _VERSION.fullmatch(version):
        raise WordingError(f"{path}: expected one version name (letters, digits, - and _), got {version!r}")
    return version


def _scan(folder: Path, texts: dict, current: dict) -> None:
    """One folder's files into ``texts`` and ``current`` (a later folder's win)."""
    if not folder.is_dir():
        return
    languages = shipped_languages()
    for kind_dir in sorted(folder.iterdir()):
        if kind_dir.name.startswith("."):
            continue
        if not kind_dir.is_dir() or kind_dir.name not in KINDS:
            raise WordingError(f"{kind_dir}: not a wording kind (known: {', '.join(sorted(KINDS))})")
        kind = kind_dir.name
        for path in sorted(kind_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if path.name == CURRENT:
                current[kind] = (_read_current(path), kind_dir)
                continue
            version, _, language = path.name.removesuffix(".txt").rpartition(".")
            if not path.name.endswith(".txt") or not _VERSION.fullmatch(version):
                raise WordingError(f"{path}: not a wording file (expected <version>.<lang>.txt or current)")
            if language not in languages:
                raise WordingError(f"{path}: {language!r} is not a shipped language ({', '.join(languages)})")
            texts[kind, version, language] = _read_text(path, kind)


def load(*folders: Path) -> Catalog:
    """Read the folders (shipped first, the store's after: its files win) and check the result:
    every kind has a current version, in every shipped language."""
    texts: dict[tuple[str, str, str], str] = {}
    current: dict[str, tuple[str, Path]] = {}
    for folder in folders:
        _scan(folder, texts, current)
    for kind in KINDS:
        if kind not in current:
            raise WordingError(f"{folders[-1] / kind / CURRENT}: missing (the version of {kind} shown now)")
        version, where = current[kind]
        for language in shipped_languages():
            if (kind, version, language) not in texts:
                raise WordingError(f"{where / f'{version}.{language}.txt'}: missing (current {kind} version)")
    return Catalog(texts, {kind: version for kind, (version, _) in current.items()})


@cache
def catalog(wording_dir: str | None) -> Catalog:
    """The shipped wording with the store's folder over it, read once per process and folder."""
    return load(SHIPPED, Path(wording_dir)) if wording_dir else load(SHIPPED)


def catalog_of(settings: Settings | None) -> Catalog:
    """The store's catalog (the shipped one alone without settings: tests, scripts)."""
    return catalog(settings.wording_dir if settings is not None else None)


def _language(settings: Settings | None, language: str | None) -> str:
    if language in shipped_languages():
        return language
    return settings.default_language if settings is not None else SOURCE_LANGUAGE


@lru_cache(maxsize=256)
def _filled(wording_dir: str | None, kind: str, version: str, language: str, value: str) -> Wording | None:
    text = catalog(wording_dir).texts.get((kind, version, language))
    if text is None:
        return None
    (name,) = KINDS[kind][0]
    return Wording(label(kind, version, language), text.replace("{" + name + "}", value), language)


def current_wording(settings: Settings | None, kind: str, language: str | None, value: str) -> Wording:
    """The text of ``kind`` shown now in ``language`` (else the default), its placeholder filled."""
    wording_dir = settings.wording_dir if settings is not None else None
    language = _language(settings, language)
    wording = _filled(wording_dir, kind, catalog(wording_dir).current[kind], language, value)
    assert wording is not None  # load() checked every current version in every language
    return wording


def signup_wording(settings: Settings, language: str | None = None) -> Wording:
    """The signup form's consent sentence, naming the store, in ``language``."""
    return current_wording(settings, SIGNUP, language, settings.store_name)


def partner_wording(settings: Settings | None, partner_name: str, language: str | None = None) -> Wording:
    """The wording next to a partner's checkbox; it names the partner (ICO: name each one)."""
    return current_wording(settings, PARTNER_SHARE, language, partner_name)


def stored_wording(settings: Settings | None, version_label: str | None, value: str) -> Wording | None:
    """The text a stored label names (any version, the language it was shown in), placeholder
    filled with ``value``; None when no file holds it (an import's own wording, a removed file)."""
    parsed = parse_label(version_label)
    if parsed is None:
        return None
    kind, version, language = parsed
    return _filled(settings.wording_dir if settings is not None else None, kind, version, language, value)
