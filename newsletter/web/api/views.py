"""API views: check the bearer token, call one service, answer JSON."""

from __future__ import annotations

import hashlib
import hmac
import json

from flask import Blueprint, current_app, jsonify, request

from newsletter import clock
from newsletter.services import customers, early_access
from newsletter.web import db

bp = Blueprint("api", __name__, url_prefix="/api")

#: Records per POST /api/customers; more is a 413 (send several requests).
MAX_RECORDS = 10_000
#: Bytes per request body: 10,000 records of a few hundred bytes each.
MAX_BODY = 8 * 1024 * 1024


def _error(status: int, message: str, **headers: str):
    response = jsonify(error=message)
    response.headers.update(headers)
    return response, status


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@bp.before_request
def require_token():
    """404 while the API is off; 401 without a bearer token; 403 with a wrong one."""
    expected = current_app.config["API_TOKEN"]
    if not expected:
        return _error(404, "the API is disabled: set NEWSLETTER_API_TOKEN to turn it on")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(401, "send 'Authorization: Bearer <token>'", **{"WWW-Authenticate": "Bearer"})
    # Digests first: compare_digest on equal lengths does not even leak the token's length.
    if not hmac.compare_digest(_digest(given.strip()), _digest(expected)):
        return _error(403, "wrong API token")
    return None


@bp.post("/customers")
def post_customers():
    """Upsert a JSON list of customer records; answers counts and per-record errors."""
    request.max_content_length = MAX_BODY
    try:
        records = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the body must be JSON: a list of customer records")
    except RecursionError:  # json.loads recurses once per level of nesting
        return _error(400, "the body nests too deeply: send a flat list of customer records")
    if not isinstance(records, list):
        return _error(400, "the body must be a JSON list of customer records")
    if len(records) > MAX_RECORDS:
        return _error(413, f"at most {MAX_RECORDS} records per request (got {len(records)})")
    report = customers.import_records(db(), records)
    db().commit()
    return jsonify(
        received=report.received,
        applied=report.applied,
        created=report.created,
        updated=report.updated,
        rejected=report.bad,
        errors=[{"index": index, "reason": reason} for index, reason in report.errors],
    )


@bp.get("/early-access/verify")
def verify_early_access():
    """Is this early-access code genuine and unexpired? (The store asks when a visitor arrives.)"""
    code = request.args.get("code", "")
    if not code:
        return _error(400, "pass the code as ?code=...")
    check = early_access.verify_code(current_app.config, code, clock.now())
    body = {
        "valid": check.valid,
        "campaign": check.campaign,
        "subscriber_ref": check.ref,
        "expires_at": check.expires_at.isoformat() + "Z" if check.expires_at else None,
    }
    if not check.valid:
        body["reason"] = check.reason
    return jsonify(body)
