"""Rendering of emails: Jinja templates (MJML inside) to HTML, plus a text part."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from mjml import mjml2html

#: The repository's top-level ``templates/`` folder, installed as the package ``newsletter.templates``
#: (pyproject.toml maps it), so it is found the same way in a checkout, an editable and a wheel install.
#: A directory on disk: pip installs packages unpacked, and Jinja's loaders read files by path.
TEMPLATES = Path(str(files("newsletter.templates")))


@lru_cache(maxsize=1)
def email_environment() -> Environment:
    """Templates under ``templates/email``: ``.mjml`` autoescaped as HTML, ``.txt`` not."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES / "email"),
        autoescape=select_autoescape(enabled_extensions=("mjml", "html"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_transactional(name: str, **context) -> tuple[str, str, str]:
    """Render ``templates/email/<name>.mjml`` and ``<name>.txt``; return (subject, text, html)."""
    env = email_environment()
    mjml_source = env.get_template(f"{name}.mjml").render(**context)
    text = env.get_template(f"{name}.txt").render(**context)
    subject_line, _, body = text.partition("\n")
    if not subject_line.startswith("Subject: "):
        raise ValueError(f"templates/email/{name}.txt must start with a 'Subject: ' line")
    return subject_line.removeprefix("Subject: ").strip(), body.lstrip("\n"), mjml2html(mjml_source)
