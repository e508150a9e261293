"""Browser protections for every response: CSP with a per-request nonce, framing, referrer, caching.

Also the cookie and CSRF settings that follow from the configuration (``BASE_URL``,
``SECRET_KEY_FALLBACKS``), so that the app's whole browser-facing policy is read in one place.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, current_app, g

from newsletter.core.config import Settings
from newsletter.web.theme import image_source

#: Our pages load nothing but their own inline stylesheet (allowed by nonce) and post only to us.
#: ``frame-ancestors 'none'``: nobody may frame a page with an unsubscribe or erase button.
CSP = "default-src 'none'; style-src {style}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
#: what a page that loads one of our own files under /static adds (``allow_own_scripts``): never inline
OWN_SCRIPTS = "; script-src 'self'"
#: with LOGO_URL set, its origin may serve images (the header's logo), nothing else
IMG_SRC = "; img-src {origin}"


def csp_nonce() -> str:
    """The nonce of this response's CSP (templates put it on their ``<style>``)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def allow_own_scripts() -> None:
    """This response's page loads a script of ours (a file under /static); every other page runs none."""
    g.own_scripts = True


def init_app(app: Flask, settings: Settings) -> None:
    # Lax: the one cross-site POST we take (RFC 8058 one-click) needs no cookie at all.
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = settings.base_url.startswith("https://")
    # itsdangerous signs with the last key and accepts all: a form rendered before a key
    # rotation still posts (Flask's own session cookie reads SECRET_KEY_FALLBACKS the same way).
    app.config["SECRET_KEY_FALLBACKS"] = list(settings.secret_key_fallbacks)
    app.config["WTF_CSRF_SECRET_KEY"] = [*settings.secret_key_fallbacks, settings.secret_key]
    app.add_template_global(csp_nonce)
    app.config["NEWSLETTER_IMG_SRC"] = image_source(settings)
    app.after_request(_protect)


def _protect(response: Response) -> Response:
    """Headers every answer carries; a view that set one of them itself keeps its own."""
    headers = response.headers
    nonce = g.get("csp_nonce")
    policy = CSP.format(style=f"'nonce-{nonce}'" if nonce else "'none'")
    images = current_app.config.get("NEWSLETTER_IMG_SRC")
    extra = (OWN_SCRIPTS if g.get("own_scripts") else "") + (IMG_SRC.format(origin=images) if images else "")
    headers.setdefault("Content-Security-Policy", policy + extra)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: Flask-WTF refuses an HTTPS form post without a same-origin
    # Referer, and a token in our URLs must never reach another site.
    headers.setdefault("Referrer-Policy", "same-origin")
    # Every page is someone's: a personal token in the URL or a CSRF token tied to their cookie.
    headers.setdefault("Cache-Control", "no-store")
    return response
