"""The store's JSON API: the blueprint, its bearer token (``NEWSLETTER_API_TOKEN``) and JSON errors.

No cookies, so no CSRF. The routes come from the features (customers, early access).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request

bp = Blueprint("api", __name__, url_prefix="/api")


def error(status: int, message: str, **headers: str):
    response = jsonify(error=message)
    response.headers.update(headers)
    return response, status


class BadJson(ValueError):
    """A request body that is not JSON, or nests too deeply to read."""


def json_body(data: bytes | str) -> Any:
    """The body as JSON, or :class:`BadJson` with a one-line reason (never a RecursionError).

    json.loads recurses once per level of nesting: ``[[[[...`` a few thousand deep would be a 500.
    """
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the body must be JSON") from None
    except RecursionError:
        raise BadJson("the body nests too deeply") from None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@bp.before_request
def require_token():
    """404 while the API is off; 401 without a bearer token; 403 with a wrong one."""
    expected = current_app.settings.api_token
    if not expected:
        return error(404, "the API is disabled: set NEWSLETTER_API_TOKEN to turn it on")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return error(401, "send 'Authorization: Bearer <token>'", **{"WWW-Authenticate": "Bearer"})
    # Digests first: compare_digest on equal lengths does not even leak the token's length.
    if not hmac.compare_digest(_digest(given.strip()), _digest(expected)):
        return error(403, "wrong API token")
    return None
