"""POST /api/events: the store's order and stock events (token checked by the API blueprint)."""

from __future__ import annotations

from functools import partial

from flask import current_app, jsonify, request

from newsletter.store_events.events import BadEvents, apply, parse_body
from newsletter.subscribers.jobs import send_transactional_many
from newsletter.web import db
from newsletter.web.api import bp, error

#: Events per request; more is a 413 (send several requests).
MAX_EVENTS = 1000
#: Bytes per request body: 1,000 events of up to 1 KiB each.
MAX_BODY = 1024 * 1024


@bp.post("/events")
def post_events():
    """Apply one event (object), or a batch (array, JSON Lines) all or nothing; answers each result."""
    request.max_content_length = MAX_BODY
    try:
        batch = parse_body(request.get_data(cache=False))
        if len(batch.events) > MAX_EVENTS:
            return error(413, f"at most {MAX_EVENTS} events per request (got {len(batch.events)})")
        results = apply(
            db(),
            current_app.settings,
            batch.events,
            partial(send_transactional_many, current_app.extensions["newsletter"]),
        )
    except BadEvents as exc:
        db().rollback()
        return jsonify(error=str(exc)[:2000], problems=exc.problems[:100]), 400
    db().commit()
    return jsonify(results[0]) if batch.single else jsonify(results=results)
