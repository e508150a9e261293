"""The partner API: signed requests only (see docs/partners.md). Views are thin."""

from __future__ import annotations

import hashlib
import tempfile

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy.exc import IntegrityError

from newsletter.models import Partner
from newsletter.partners import exchange, signing
from newsletter.partners.files import FileRefused
from newsletter.partners.invitations import enqueue_invitations
from newsletter.partners.registry import PartnerError
from newsletter.web import db, runtime

bp = Blueprint("partners_api", __name__, url_prefix="/api/partners")
#: the largest contact file a partner may POST (it is spooled to disk, never held in memory)
MAX_UPLOAD = 4 * 1024**3
_SPOOL_IN_MEMORY = 1024 * 1024


def _error(message: str, status: int):
    return jsonify(error=message), status


def _precheck(partner_id: str) -> Partner | None:
    """What can be checked before reading a body: the time window and the nonce's shape."""
    signing.check_timestamp(request.headers.get(signing.TIMESTAMP_HEADER))
    signing.check_nonce(request.headers.get(signing.NONCE_HEADER))
    return db().get(Partner, partner_id)


def _authenticate(partner: Partner | None, body_sha256: str) -> Partner:
    """The signature, then the nonce (so nobody without the secret can burn a partner's nonces)."""
    # An unknown partner is refused like a bad signature: the API does not list partners.
    secret = partner.secret if partner else "unknown-partner-" + "x" * 32
    signing.check_signature(
        secret,
        request.method,
        request.path,
        request.headers[signing.TIMESTAMP_HEADER],
        request.headers[signing.NONCE_HEADER],
        body_sha256,
        request.headers.get(signing.SIGNATURE_HEADER),
    )
    if partner is None:
        raise signing.RequestRefused("bad signature")
    signing.claim_nonce(runtime().redis, partner.id, request.headers[signing.NONCE_HEADER])
    return partner


@bp.get("/<partner_id>/export")
def export(partner_id: str):
    """The signed contact file of everyone who agreed to be shared with this partner, streamed."""
    try:
        partner = _authenticate(_precheck(partner_id), hashlib.sha256(b"").hexdigest())
    except signing.RequestRefused as exc:
        return _error(str(exc), exc.status)
    config = current_app.config
    session = runtime().sessions()

    def body():
        try:
            yield from exchange.export_contacts(session, config, partner)
        finally:
            session.close()

    try:
        chunks = body()
        first = next(chunks)
    except PartnerError as exc:
        return _error(str(exc), 503)

    def stream():
        yield first
        yield from chunks

    return Response(
        stream_with_context(stream()),
        mimetype="application/x-ndjson",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{partner.id}.jsonl"',
        },
    )


@bp.post("/<partner_id>/contacts")
def contacts(partner_id: str):
    """Import a signed contact file (the request body) and invite the people in it to confirm."""
    try:
        partner = _precheck(partner_id)  # a stale or malformed request is refused before its body is read
    except signing.RequestRefused as exc:
        return _error(str(exc), exc.status)
    request.max_content_length = MAX_UPLOAD
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        digest = hashlib.sha256()
        while chunk := request.stream.read(64 * 1024):
            digest.update(chunk)
            spool.write(chunk)
        try:
            partner = _authenticate(partner, digest.hexdigest())
        except signing.RequestRefused as exc:
            return _error(str(exc), exc.status)
        rt = runtime()
        try:
            report = exchange.import_contacts(
                db(),
                current_app.config,
                partner,
                spool,
                channel="api",
                dispatch=lambda ids: enqueue_invitations(rt, ids),
            )
            db().commit()
        except (FileRefused, PartnerError) as exc:
            db().rollback()
            return _error(str(exc), 422)
        except IntegrityError:
            db().rollback()
            return _error(
                "some of these addresses were added meanwhile; nothing was imported, send it again", 409
            )
    return jsonify(report.as_dict())
