"""Push and pull over the partner API: our signed export to the partner's engine, its export of us back.

Every request is signed as ``signing`` verifies (a fresh nonce per attempt, so a retry is never
a replay), over TLS verified by default, with timeouts, and retried with backoff after a
network error or a 502/503/504, and after the partner's Retry-After for a 429 (its rate limit).
Only what changed since the last exchange that went through travels: a push names our last
pushed export in its file header, a pull names the partner's last export we imported whole
(``X-Partner-Previous-Exchange``, covered by the request's signature).

Each file is kept in ``PARTNER_SPOOL_DIR`` until it is through, so an exchange that was cut
off (the process killed, the partner gone mid-import) goes on with the very same bytes next
time and the partner's (or our) import checkpoint resumes it: nobody is invited twice.
Call these under the partner's lock (``sync.partner_lock``); the caller commits nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from newsletter.core.config import Settings
from newsletter.models import Partner, PartnerImport
from newsletter.models.partners import PartnerExchange
from newsletter.partners import exchange, files, history, signing
from newsletter.partners.checkpoint import ImportInterrupted
from newsletter.partners.exchange import export_contacts
from newsletter.partners.files import FileRefused
from newsletter.partners.registry import PartnerError, require_store_id

#: answers worth another attempt (the partner restarting, a proxy in between)
TRANSIENT = {502, 503, 504}
#: the partner's rate limit: another attempt after its Retry-After, if that is at most MAX_WAIT
LIMITED = 429
#: seconds we wait at most before another attempt (a longer Retry-After fails the exchange now)
MAX_WAIT = 60
_CHUNK = 64 * 1024


class ExchangeFailed(Exception):
    """The exchange did not go through; the message is one line for the operator."""


@dataclass
class Outcome:
    """What one push or pull did: its history row, and whether it resumed an earlier file."""

    exchange_id: int
    records: int
    invited: int
    skipped: dict
    resumed: bool = False


# --- HTTP ---------------------------------------------------------------------------------


def _send(
    settings: Settings,
    partner: Partner,
    method: str,
    path: str,
    *,
    body: Path | None = None,
    previous: int | None = None,
    stream: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """One signed request, retried on transient failures; raises ExchangeFailed with one line."""
    if not partner.url:
        raise ExchangeFailed(
            f"partner {partner.id} has no URL: 'newsletter partners update {partner.id} --url ...'"
        )
    url = partner.url + path
    body_sha256 = _sha256(body) if body else hashlib.sha256(b"").hexdigest()
    attempts = settings.partner_retries + 1
    for attempt in range(attempts):
        headers = _signed(partner.secret, method, path, body_sha256, previous)
        try:
            if body:
                headers["Content-Type"] = "application/x-ndjson"
                with body.open("rb") as handle:  # streamed, with its Content-Length
                    headers["Content-Length"] = str(body.stat().st_size)
                    response = requests.request(
                        method, url, data=handle, headers=headers, timeout=settings.partner_timeout
                    )
            else:
                response = requests.request(
                    method, url, headers=headers, timeout=settings.partner_timeout, stream=stream
                )
        except requests.exceptions.SSLError as exc:
            raise ExchangeFailed(
                f"{partner.id} at {partner.url}: TLS certificate not accepted ({_why(exc)})"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt + 1 < attempts:
                sleep(_backoff(attempt))
                continue
            raise ExchangeFailed(
                f"cannot reach {partner.id} at {partner.url} after {attempts} attempts: {_why(exc)}"
            ) from None
        if response.status_code in TRANSIENT and attempt + 1 < attempts:
            response.close()
            sleep(_retry_after(response, attempt))
            continue
        if response.status_code == LIMITED and attempt + 1 < attempts and _wait(response) <= MAX_WAIT:
            response.close()
            sleep(_wait(response))  # its window is over then: the next attempt counts in a new one
            continue
        if response.status_code >= 400:
            message = _refusal(partner, response)
            response.close()
            raise ExchangeFailed(message)
        return response
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _signed(secret: str, method: str, path: str, body_sha256: str, previous: int | None) -> dict[str, str]:
    """Fresh timestamp and nonce per attempt; the signature covers the body's hash and the
    previous-exchange header (sent only when there is one)."""
    headers = signing.request_headers(secret, method, path, previous=previous)
    headers[signing.SIGNATURE_HEADER] = signing.request_signature(
        secret,
        method,
        path,
        headers[signing.TIMESTAMP_HEADER],
        headers[signing.NONCE_HEADER],
        body_sha256,
        headers.get(signing.PREVIOUS_HEADER, ""),
    )
    return headers


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt)


def _retry_after(response: requests.Response, attempt: int) -> float:
    value = response.headers.get("Retry-After", "")
    return min(float(MAX_WAIT), float(value)) if value.isdigit() else _backoff(attempt)


def _wait(response: requests.Response) -> int:
    """A 429's Retry-After in seconds (a minute when it is missing or not a number of seconds)."""
    value = response.headers.get("Retry-After", "")
    return int(value) if value.isdigit() and len(value) < 9 else MAX_WAIT


def _why(exc: Exception) -> str:
    """The innermost reason of a requests error, one line (not urllib3's nested repr)."""
    reason: BaseException = exc
    while reason.__context__ is not None and reason.__context__ is not reason:
        reason = reason.__context__
    text = str(reason).split("] ")[-1] if "]" in str(reason) else str(reason)
    return " ".join(text.split())[:200] or type(reason).__name__


def _refusal(partner: Partner, response: requests.Response) -> str:
    try:
        said = response.json().get("error", "")
    except ValueError:
        said = ""
    said = " ".join(str(said).split())[:200] or response.reason or ""
    status = response.status_code
    who = f"{partner.id} at {partner.url}"
    if status in (401, 403):
        return (
            f"{who} refused our signature ({status}: {said}): check the shared secret, both clocks, "
            "and that it registered us under our NEWSLETTER_STORE_ID"
        )
    if status == LIMITED:
        return f"{who} limits our requests (429: {said}); try again in {_wait(response)} s"
    if status == 404:
        return f"{who} has no partner API at this URL (404): check 'partners update --url'"
    if status >= 500:
        return f"{who} answered {status} ({said}); nothing was imported from this answer"
    return f"{who} answered {status}: {said}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the spool: a file stays until it is through ---------------------------------------------


def _spool(settings: Settings) -> Path:
    path = Path(settings.partner_spool_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _kept(settings: Settings, kind: str, partner_id: str) -> tuple[Path, int] | None:
    """The file of an exchange that did not go through, and its history row, if there is one."""
    for path in sorted(_spool(settings).glob(f"{kind}-{partner_id}.*.jsonl")):
        row_id = path.name.rsplit(".", 2)[-2]
        if row_id.isdigit():
            return path, int(row_id)
    return None


def _kept_path(settings: Settings, kind: str, partner_id: str, row_id: int) -> Path:
    return _spool(settings) / f"{kind}-{partner_id}.{row_id}.jsonl"


def _write_atomically(target: Path, chunks) -> int:
    """Write next to ``target``, rename when whole: a kept file is never a cut-off one."""
    temp = target.with_suffix(".part")
    size = 0
    try:
        with temp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return size


# --- push ---------------------------------------------------------------------------------


def push(session: Session, settings: Settings, partner: Partner) -> list[Outcome]:
    """Send what changed since the last push to the partner; a push cut off earlier goes first."""
    history.close_interrupted(session, partner.id, ("push",))
    session.commit()
    outcomes = []
    kept = _kept(settings, "push", partner.id)
    if kept is not None:  # the same bytes again: the partner's checkpoint resumes that import
        outcomes.append(_post(session, settings, partner, *kept, resumed=True))
    previous = history.last_done(session, partner.id, "export", "push")
    row = history.start(session, partner.id, "export", "push", previous)
    session.commit()
    path = _kept_path(settings, "push", partner.id, row.id)
    try:
        _write_atomically(path, _export_adapter(session, settings, partner, previous=previous, exchange=row))
        session.commit()  # the row's record count
    except (PartnerError, OSError) as exc:
        session.rollback()
        path.unlink(missing_ok=True)
        history.fail(session, row.id, f"the export could not be written: {exc}")
        session.commit()
        raise ExchangeFailed(f"the export for {partner.id} could not be written: {exc}") from None
    outcomes.append(_post(session, settings, partner, path, row.id))
    return outcomes


def _export_adapter(session, settings, partner, *, previous, exchange: PartnerExchange):
    """The one place push calls the exporter, with the exchange it belongs to and the one it follows."""
    return export_contacts(session, settings, partner, channel="push", previous=previous, exchange=exchange)


def _post(
    session: Session, settings: Settings, partner: Partner, path: Path, row_id: int, *, resumed: bool = False
) -> Outcome:
    store_id = require_store_id(settings)
    try:
        response = _send(settings, partner, "POST", f"/api/partners/{store_id}/contacts", body=path)
    except ExchangeFailed as exc:
        if not _keep_after(str(exc)):
            path.unlink(missing_ok=True)
        history.fail(session, row_id, str(exc))
        session.commit()
        raise
    try:
        report = response.json()
        counts = {
            "records": int(report["records"]),
            "invited": int(report["invited"]),
            "skipped": dict(report["skipped"]),
        }
    except (ValueError, KeyError, TypeError):
        history.fail(session, row_id, f"{partner.id} answered 200 without a report")
        session.commit()
        raise ExchangeFailed(
            f"{partner.id} answered 200 without an import report; the file is kept to send again"
        ) from None
    row = session.get(PartnerExchange, row_id)
    history.finish(session, row, counts)
    session.commit()
    path.unlink(missing_ok=True)
    return Outcome(row_id, counts["records"], counts["invited"], counts["skipped"], resumed)


def _keep_after(error: str) -> bool:
    """Keep the file to send again after a network error, a 5xx, the partner's rate limit (429:
    it read nothing of it) or an import stopped part-way (409)."""
    return (
        "cannot reach" in error
        or " answered 5" in error
        or "answered 409" in error
        or "limits our requests (429" in error
    )


# --- pull ---------------------------------------------------------------------------------


def pull(
    session: Session,
    settings: Settings,
    partner: Partner,
    dispatch: Callable[[list[int]], None],
    topics: tuple[str, ...] = exchange.DEFAULT_TOPICS,
) -> list[Outcome]:
    """Fetch the partner's export of us (what changed since the last pull) and import it.

    Nothing is imported from an answer whose signature does not check out over the whole file.
    """
    history.close_interrupted(session, partner.id, ("pull",))
    session.commit()
    outcomes = []
    kept = _kept(settings, "pull", partner.id)
    if kept is not None:  # downloaded whole before, import cut off: the checkpoint resumes it
        outcomes.append(_import(session, settings, partner, *kept, dispatch, topics, resumed=True))
    last = history.last_done(session, partner.id, "import", "pull")
    row = history.start(session, partner.id, "import", "pull", last)
    session.commit()
    store_id = require_store_id(settings)
    path = _kept_path(settings, "pull", partner.id, row.id)
    try:
        response = _send(
            settings,
            partner,
            "GET",
            f"/api/partners/{store_id}/export",
            previous=last.remote_id if last else None,
            stream=True,
        )
        with response:
            _write_atomically(path, _limited(response, settings.partner_max_body_mb, partner))
    except (ExchangeFailed, OSError, requests.RequestException) as exc:
        message = (
            str(exc)
            if isinstance(exc, ExchangeFailed)
            else f"the download from {partner.id} broke off: {_why(exc)}"
        )
        history.fail(session, row.id, message)
        session.commit()
        raise ExchangeFailed(message) from None
    outcomes.append(_import(session, settings, partner, path, row.id, dispatch, topics))
    return outcomes


def _limited(response: requests.Response, limit_mb: int, partner: Partner):
    limit, size = limit_mb * 1024 * 1024, 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ExchangeFailed(
                f"{partner.id}'s export is larger than {limit_mb} MiB "
                "(NEWSLETTER_PARTNER_MAX_BODY_MB); nothing was imported"
            )
        yield chunk


def _import(
    session: Session,
    settings: Settings,
    partner: Partner,
    path: Path,
    row_id: int,
    dispatch,
    topics,
    *,
    resumed: bool = False,
) -> Outcome:
    try:
        with path.open("rb") as handle:
            report = _finished_before(session, partner.id, path) if resumed else None
            report = report or exchange.import_contacts(
                session, settings, partner, handle, channel="pull", dispatch=dispatch, topics=topics
            )
            session.commit()
            remote_id = files.header(handle).get("exchange")
    except (FileRefused, PartnerError) as exc:  # a forged or mis-signed answer: nothing was written
        session.rollback()
        path.unlink(missing_ok=True)
        message = f"{partner.id}'s answer was refused: {exc}; nothing was imported"
        history.fail(session, row_id, message)
        session.commit()
        raise ExchangeFailed(message) from None
    except (ImportInterrupted, IntegrityError) as exc:  # whole chunks kept; the file stays to resume
        session.rollback()
        message = (
            str(exc) if isinstance(exc, ImportInterrupted) else "addresses were added meanwhile; pull again"
        )
        history.fail(session, row_id, message)
        session.commit()
        raise ExchangeFailed(f"{partner.id}: {message}") from None
    row = session.get(PartnerExchange, row_id)
    history.finish(session, row, report, remote_id=remote_id)
    session.commit()
    path.unlink(missing_ok=True)
    return Outcome(
        row_id, report.records, report.invited, dict(report.skipped), resumed or bool(report.resumed_after)
    )


def _finished_before(session: Session, partner_id: str, path: Path) -> exchange.ImportReport | None:
    """The report of this very file's import if it completed (the process died just after)."""
    sha256 = _sha256(path)
    done = session.scalar(
        select(PartnerImport)
        .where(
            PartnerImport.partner_id == partner_id,
            PartnerImport.kind == "contacts",
            PartnerImport.file_sha256 == sha256,
            PartnerImport.completed_at.is_not(None),
        )
        .limit(1)
    )
    if done is None:
        return None
    report = done.report or {}
    return exchange.ImportReport(
        records=done.records,
        invited=report.get("invited", 0),
        skipped=Counter(report.get("skipped", {})),
        file_sha256=sha256,
        import_id=done.id,
        resumed_after=done.records,
    )
