"""The shipped languages and their catalogs, for pages (web/i18n.py) and mail rendered by the worker.

English is the source language and needs no catalog; every other language is a folder
``newsletter/translations/<lang>/LC_MESSAGES`` with ``messages.po`` and its compiled ``messages.mo``
(both committed, docs/languages.md: ``make translations``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from babel.support import NullTranslations, Translations

SOURCE_LANGUAGE = "en"
TRANSLATIONS = Path(str(files("newsletter") / "translations"))

#: each language in its own name, for the preference centre's choice
NAMES = {"en": "English", "de": "Deutsch", "fr": "Français"}


@cache
def shipped_languages() -> tuple[str, ...]:
    """English, then every language with a catalog, in name order."""
    catalogs = TRANSLATIONS.glob("*/LC_MESSAGES/messages.po") if TRANSLATIONS.is_dir() else ()
    found = sorted(p.parent.parent.name for p in catalogs)
    return (SOURCE_LANGUAGE, *[lang for lang in found if lang != SOURCE_LANGUAGE])


def language_name(language: str) -> str:
    """The language as its speakers write it (the code itself for one we have no name for)."""
    return NAMES.get(language, language)


def resolve(language: str | None, default: str) -> str:
    """A recipient's language: their stored one when shipped, else the store's default."""
    return language if language in shipped_languages() else default


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of ``language`` (English, or a language without one: the source text)."""
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS), [language])
