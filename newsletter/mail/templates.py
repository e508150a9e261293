"""Rendering of emails: Jinja templates (MJML inside) to HTML, plus a text part."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from jinja2 import FileSystemLoader
from mjml import mjml2html

from newsletter.core.config import Settings
from newsletter.core.languages import SOURCE_LANGUAGE, translations
from newsletter.mail.branding import brand_of
from newsletter.mail.sandbox import MailEnvironment, sandbox

#: The repository's top-level ``templates/`` folder, installed as the package ``newsletter.templates``
#: (pyproject.toml maps it), so it is found the same way in a checkout, an editable and a wheel install.
#: A directory on disk: pip installs packages unpacked, and Jinja's loaders read files by path.
TEMPLATES = Path(str(files("newsletter.templates")))


def email_folder() -> Path:
    """``templates/email`` (read at each call: tests point ``TEMPLATES`` at a copy)."""
    return TEMPLATES / "email"


def email_folders(overrides_dir: str | None) -> list[str]:
    """Where email templates are looked up: the instance's ``OVERRIDES_DIR/email`` first (a file
    there wins over the shipped one of the same name), then ``templates/email``."""
    shipped = [str(email_folder())]
    return [str(Path(overrides_dir) / "email"), *shipped] if overrides_dir else shipped


def unmatched_overrides(overrides_dir: str | None) -> list[str]:
    """Files in the override folder that replace no shipped template (a misspelt name, a file
    outside ``web/`` and ``email/``): each one a line for the start-up warning. A partial that an
    override includes is listed too; the warning says it is used only if something includes it."""
    folder = Path(overrides_dir) if overrides_dir else None
    if folder is None or not folder.is_dir():
        return []
    unmatched = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if relative.parts[0].startswith(".") or (TEMPLATES / relative).is_file():
            continue
        unmatched.append(
            f"{path} replaces no shipped template (templates/{relative.as_posix()} does not exist); "
            "it is used only if another template includes it"
        )
    return unmatched


@lru_cache(maxsize=16)
def email_environment(settings: Settings | None = None, language: str = SOURCE_LANGUAGE) -> MailEnvironment:
    """Templates under the override folder and ``templates/email`` in the campaign files' sandbox
    (overrides too): ``.mjml`` autoescaped as HTML, ``.txt`` not, an undefined name an error. Every
    template sees ``brand`` (logo, colours: mail/branding.py), the defaults' without ``settings``.
    Their strings in ``language`` (one environment per language: the worker renders outside any request, so
    Flask-Babel's choice is not there)."""
    env = sandbox(FileSystemLoader(email_folders(settings.overrides_dir if settings else None)))
    env.install_gettext_translations(translations(language), newstyle=True)
    env.globals["language"] = language  # <mjml lang>: the email says which language it is in
    # without settings (a check of the files, a test): the shipped look, so the layouts still render
    env.globals["brand"] = brand_of(settings if settings is not None else Settings())
    return env


def split_subject(name: str, text: str) -> tuple[str, str]:
    """(subject, body) of a rendered ``.txt`` whose first line is ``Subject: ...``."""
    subject_line, _, body = text.partition("\n")
    if not subject_line.startswith("Subject: "):
        raise ValueError(f"templates/email/{name}.txt must start with a 'Subject: ' line")
    return subject_line.removeprefix("Subject: ").strip(), body.lstrip("\n")


def render_transactional(
    name: str, settings: Settings | None = None, language: str = SOURCE_LANGUAGE, **context
) -> tuple[str, str, str]:
    """Render ``<name>.mjml`` and ``<name>.txt`` (an override's if there is one) in ``language``:
    (subject, text, html)."""
    env = email_environment(settings, language)
    mjml_source = env.get_template(f"{name}.mjml").render(**context)
    subject, body = split_subject(name, env.get_template(f"{name}.txt").render(**context))
    return subject, body, mjml2html(mjml_source)
