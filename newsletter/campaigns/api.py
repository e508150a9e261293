"""The store's reward code routes: GET /api/codes/verify, POST /api/codes/redeemed (bearer token)."""

from __future__ import annotations

from flask import current_app, jsonify, request

from newsletter.campaigns import rewards
from newsletter.core import clock
from newsletter.web import db
from newsletter.web.api import BadJson, bp, error, json_body


@bp.get("/codes/verify")
def verify_code():
    """May the store accept this reward code? ``valid``, ``expired``, ``redeemed`` or ``unknown``."""
    code = request.args.get("code", "")
    if not code.strip():
        return error(400, "pass the code as ?code=...")
    check = rewards.check_code(db(), current_app.settings, code, clock.now().date())
    return jsonify(status=check.status, expires=check.expires.isoformat() if check.expires else None)


@bp.post("/codes/redeemed")
def code_redeemed():
    """The store says a customer used their code: recorded once, however often it is said."""
    try:
        body = json_body(request.get_data(cache=False))
    except BadJson:
        body = None
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code.strip() or len(code) > rewards.MAX_CODE:
        return error(400, 'send JSON {"code": "..."}')
    session = db()
    status = rewards.redeem(session, current_app.settings, code, clock.now())
    session.commit()
    return jsonify(status=status)
