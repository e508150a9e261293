"""GET /api/early-access/verify: the store checks a code (token checked by the API blueprint)."""

from __future__ import annotations

from flask import current_app, jsonify, request

from newsletter.core import clock
from newsletter.early_access import access as early_access
from newsletter.web.api import bp, error


@bp.get("/early-access/verify")
def verify_early_access():
    """Is this early-access code genuine and unexpired? (The store asks when a visitor arrives.)"""
    code = request.args.get("code", "")
    if not code:
        return error(400, "pass the code as ?code=...")
    check = early_access.verify_code(current_app.settings, code, clock.now())
    body = {
        "valid": check.valid,
        "campaign": check.campaign,
        "subscriber_ref": check.ref,
        "expires_at": check.expires_at.isoformat() + "Z" if check.expires_at else None,
    }
    if not check.valid:
        body["reason"] = check.reason
    return jsonify(body)
