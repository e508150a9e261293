"""POST /api/customers: the store sends customer records (token checked by the API blueprint)."""

from __future__ import annotations

from flask import jsonify, request

from newsletter.customers import records as customers
from newsletter.web import db
from newsletter.web.api import BadJson, bp, error, json_body

#: Records per POST /api/customers; more is a 413 (send several requests).
MAX_RECORDS = 10_000
#: Bytes per request body: 10,000 records of a few hundred bytes each.
MAX_BODY = 8 * 1024 * 1024


@bp.post("/customers")
def post_customers():
    """Upsert a JSON list of customer records; answers counts and per-record errors."""
    request.max_content_length = MAX_BODY
    try:
        records = json_body(request.get_data(cache=False))
    except BadJson as exc:
        return error(400, f"{exc}: a flat list of customer records")
    if not isinstance(records, list):
        return error(400, "the body must be a JSON list of customer records")
    if len(records) > MAX_RECORDS:
        return error(413, f"at most {MAX_RECORDS} records per request (got {len(records)})")
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
