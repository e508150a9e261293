"""Languages of the pages (Flask-Babel): which one a request gets, and which ones are shipped.

The language is, in order: the one a view set for the subscriber it serves (their stored choice,
``use_language``), the best match of the browser's ``Accept-Language`` among the shipped ones, the
store's ``DEFAULT_LANGUAGE``. Catalogs live in ``newsletter/translations/<lang>/LC_MESSAGES``
(docs/languages.md); English is the source language and needs no catalog.
"""

from __future__ import annotations

from flask import Flask, current_app, g, request
from flask_babel import Babel, get_locale

from newsletter.core.config import ConfigError, Settings
from newsletter.core.languages import SOURCE_LANGUAGE, TRANSLATIONS, shipped_languages

__all__ = [
    "SOURCE_LANGUAGE",
    "TRANSLATIONS",
    "babel",
    "init_app",
    "page_language",
    "shipped_languages",
    "use_language",
]

babel = Babel()


def init_app(app: Flask, settings: Settings) -> None:
    if settings.default_language not in shipped_languages():
        raise ConfigError(
            f"NEWSLETTER_DEFAULT_LANGUAGE: {settings.default_language!r} is not one of the shipped "
            f"languages ({', '.join(shipped_languages())})"
        )
    app.config["BABEL_DEFAULT_LOCALE"] = settings.default_language
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    babel.init_app(app, locale_selector=select_language)
    # <html lang> names the language the page is shown in (screen readers pick their voice by it)
    app.context_processor(lambda: {"page_language": page_language()})


def use_language(language: str | None) -> None:
    """A view that knows its subscriber sets their stored language for this request's page."""
    if language in shipped_languages():
        g.language = language


def page_language() -> str:
    """The language this request's page is shown in (the choice below, made once per request)."""
    return str(get_locale() or current_app.settings.default_language)


def select_language() -> str:
    chosen = g.get("language")
    if chosen:
        return chosen
    best = request.accept_languages.best_match(shipped_languages()) if request else None
    return best or current_app.settings.default_language
