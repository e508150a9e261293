"""The partner API: signed requests only (see docs/partners.md). Views are thin."""

from __future__ import annotations

import hashlib
import tempfile

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from sqlalchemy.exc import IntegrityError

from newsletter.models import Partner
from newsletter.partners import exchange, files, history, limits, registry, signing
from newsletter.partners.checkpoint import ImportInterrupted
from newsletter.partners.files import FileRefused
from newsletter.partners.invitations import enqueue_invitations
from newsletter.partners.registry import PartnerError
from newsletter.partners.signing import PREVIOUS_HEADER
from newsletter.web import db, runtime

bp = Blueprint("partners_api", __name__, url_prefix="/api/partners")
_SPOOL_IN_MEMORY = 1024 * 1024
_CHUNK = 64 * 1024


def _error(message: str, status: int):
    return jsonify(error=message), status


def _refused(exc: signing.RequestRefused):
    response = jsonify(error=str(exc))
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response, exc.status


def _precheck(partner_id: str) -> Partner:
    """All the headers can tell before a byte of the body is read: time window, shapes, partner.

    An unknown (or malformed) partner id is refused like a bad signature, so the answer does
    not say who our partners are; its body is never read.
    """
    signing.check_timestamp(request.headers.get(signing.TIMESTAMP_HEADER))
    signing.check_nonce(request.headers.get(signing.NONCE_HEADER))
    signing.check_signature_shape(request.headers.get(signing.SIGNATURE_HEADER))
    # The shape first: an id PostgreSQL cannot even compare (a NUL byte) never reaches it.
    partner = db().get(Partner, partner_id) if registry.PARTNER_ID.fullmatch(partner_id) else None
    if partner is None:
        raise signing.RequestRefused("bad signature")
    return partner


def _authenticate(partner: Partner, body_sha256: str) -> int:
    """The signature, then the nonce (so nobody without the secret can burn a partner's nonces),
    then the partner's rate limit (429); answers the signature's version (1: the previous-exchange
    header is not covered, so it must not be used)."""
    version = signing.check_signature(
        partner.secret,
        request.method,
        request.path,
        request.headers[signing.TIMESTAMP_HEADER],
        request.headers[signing.NONCE_HEADER],
        body_sha256,
        request.headers.get(signing.SIGNATURE_HEADER),
        request.headers.get(PREVIOUS_HEADER, ""),
    )
    signing.claim_nonce(runtime().redis, partner.id, request.headers[signing.NONCE_HEADER])
    # counted once authentic (forged requests cannot spend a partner's budget); fails closed
    limits.check_partner_api(runtime().redis, partner.id, current_app.settings.partner_api_rate_limit)
    return version


def _body_limit() -> int:
    """413 unless the declared length fits the setting; 411 without a declared length."""
    limit = current_app.settings.partner_max_body_mb * 1024 * 1024
    length = request.content_length  # None for a chunked body: it could be any size
    if length is None:
        raise signing.RequestRefused("send the body with a Content-Length header", status=411)
    if length > limit:
        raise signing.RequestRefused(
            f"the body is larger than {current_app.settings.partner_max_body_mb} MiB "
            "(NEWSLETTER_PARTNER_MAX_BODY_MB)",
            status=413,
        )
    return limit


@bp.get("/<partner_id>/export")
def export(partner_id: str):
    """The signed contact file of everyone who agreed to be shared with this partner, streamed."""
    try:
        partner = _precheck(partner_id)
        version = _authenticate(partner, hashlib.sha256(b"").hexdigest())
    except signing.RequestRefused as exc:
        return _refused(exc)
    settings = current_app.settings
    session = runtime().sessions()
    # The caller names the last of our exports it imported whole: only what changed since travels.
    # Only a header the signature covers counts (v1 did not sign it: a full export then).
    previous = exchange.previous_export(session, partner.id, _previous_id() if version >= 2 else None)
    row = history.start(session, partner.id, "export", "api", previous)
    session.commit()

    def body():
        try:
            yield from exchange.export_contacts(
                session, settings, partner, channel="api", previous=previous, exchange=row
            )
            history.finish(session, row)  # sent whole; the caller's own history says if it imported it
            session.commit()
        finally:
            session.close()

    try:
        chunks = body()
        first = next(chunks)
    except PartnerError as exc:
        with runtime().sessions() as other:
            history.fail(other, row.id, str(exc))
            other.commit()
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
        partner = _precheck(partner_id)
        request.max_content_length = _body_limit()
    except signing.RequestRefused as exc:
        return _error(str(exc), exc.status)
    # Hashed as it streams in, kept on disk beyond a MiB; the signature is checked at the end.
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        digest = hashlib.sha256()
        while chunk := request.stream.read(_CHUNK):
            digest.update(chunk)
            spool.write(chunk)
        try:
            _authenticate(partner, digest.hexdigest())
        except signing.RequestRefused as exc:
            return _refused(exc)
        rt = runtime()
        row_id = history.start_committed(rt.sessions, partner.id, "import", "api")
        try:
            report = exchange.import_contacts(
                db(),
                current_app.settings,
                partner,
                spool,
                channel="api",
                dispatch=lambda ids: enqueue_invitations(rt, ids),
            )
            db().commit()
        except (FileRefused, PartnerError) as exc:
            db().rollback()
            history.fail_committed(rt.sessions, row_id, str(exc))
            return _error(str(exc), 422)
        except ImportInterrupted as exc:  # the chunks before are kept: sending the file again resumes
            history.fail_committed(rt.sessions, row_id, str(exc))
            return _error(str(exc), 409)
        except IntegrityError:
            db().rollback()
            message = "some of these addresses were added meanwhile; nothing was imported, send it again"
            history.fail_committed(rt.sessions, row_id, message)
            return _error(message, 409)
        history.finish_committed(rt.sessions, row_id, report, remote_id=files.header(spool).get("exchange"))
    return jsonify(report.as_dict())


def _previous_id() -> int | None:
    """``X-Partner-Previous-Exchange``: the id of our export the caller imported last (digits)."""
    value = request.headers.get(PREVIOUS_HEADER, "")
    return int(value) if value.isdigit() and len(value) < 12 else None
