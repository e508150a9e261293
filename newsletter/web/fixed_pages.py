"""Pages whose words depend on nothing but the language: rendered once, the CSP nonce filled in per answer.

"Check your inbox" is the answer to every signup POST; rendering it through Jinja and Flask-Babel
(a dozen gettext look-ups, the context processors) cost about as much as the signup's SQL
statement (docs/throughput.md). Its text depends only on the page's language, the store's settings
and the path the app is mounted at, so each app keeps one copy per (page, language, mount) and
puts this answer's nonce into it. A store that overrides any page (``OVERRIDES_DIR/web``) gets
every render as before: its templates may read anything from the request.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import current_app, g, render_template, request

from newsletter.web.i18n import page_language
from newsletter.web.security import csp_nonce

_KEY = "newsletter_fixed_pages"


def render_fixed(template: str) -> str:
    """``render_template(template)`` for a page without variables of its own, from the app's copy."""
    app = current_app
    cache = app.extensions.get(_KEY)
    if cache is None:
        overrides = Path(app.settings.overrides_dir) / "web"
        overridden = overrides.is_dir() and any(overrides.iterdir())
        # TEMPLATES_AUTO_RELOAD (debug): someone is editing the templates, render each time.
        cache = app.extensions[_KEY] = None if overridden or app.jinja_env.auto_reload else {}
    if cache is None:
        return render_template(template)
    key = (template, page_language(), request.script_root)
    if key not in cache:
        cache[key] = _render_with_placeholder(template)
    page, placeholder = cache[key]
    return page.replace(placeholder, csp_nonce())


def _render_with_placeholder(template: str) -> tuple[str, str]:
    """The page with a random stand-in where the nonce goes (a random value cannot be in the text)."""
    placeholder = "nonce" + secrets.token_hex(16)
    own = g.pop("csp_nonce", None)
    g.csp_nonce = placeholder
    try:
        page = render_template(template)
    finally:
        g.pop("csp_nonce")
        if own is not None:
            g.csp_nonce = own
    return page, placeholder
