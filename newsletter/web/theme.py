"""The store's look on its pages: the override folder first, ``brand`` in every template.

``OVERRIDES_DIR/web/<page>.html`` wins over ``templates/web/<page>.html`` (and
``OVERRIDES_DIR/web/site.css`` over the stylesheet), so a store re-words or re-lays a page
without touching the package (docs/theming.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from jinja2 import ChoiceLoader, FileSystemLoader

from newsletter.core.config import Settings
from newsletter.mail.branding import brand_of
from newsletter.mail.templates import TEMPLATES, unmatched_overrides

log = logging.getLogger(__name__)


def init_app(app: Flask, settings: Settings) -> None:
    # Flask asks the app's loader first, the blueprints' after: an override wins everywhere.
    app.jinja_loader = ChoiceLoader(
        [FileSystemLoader(str(Path(settings.overrides_dir))), FileSystemLoader(str(TEMPLATES))]
    )
    for problem in unmatched_overrides(settings.overrides_dir):  # a misspelt name silently does nothing
        log.warning("OVERRIDES_DIR: %s", problem)
    brand = brand_of(settings)
    app.context_processor(lambda: {"brand": brand})


def image_source(settings: Settings) -> str | None:
    """The CSP ``img-src`` the logo needs: its origin, or None without a logo."""
    if not settings.logo_url:
        return None
    parts = urlsplit(settings.logo_url)
    return f"{parts.scheme}://{parts.netloc}"
