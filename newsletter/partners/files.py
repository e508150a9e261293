"""The signed JSON Lines envelope shared by contact and suppression files.

    {"type": "header", "format": ..., "version": 1, "from": ..., "to": ..., "created_at": ...}
    one JSON object per record
    {"type": "trailer", "records": N, "signature": "hmac-sha256:<hex>"}

The signature is HMAC-SHA256 with the pair's secret over a fixed context string followed by
every byte of the file before the trailer (the header included), so the sender, the
recipient, the creation time and every record are covered. Readers never hold the file:
lines are read one at a time (at most ``MAX_LINE`` bytes each). ``verify`` also notes where each
chunk of ``CHUNK_RECORDS`` records starts and its SHA-256, so that ``chunks`` can start anywhere
and hand out only bytes that are exactly what was verified.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from newsletter.core import clock
from newsletter.partners.signing import file_mac

CONTACTS = "newsletter-partner-contacts"
SUPPRESSIONS = "newsletter-partner-suppressions"
VERSION = 1
MAX_LINE = 64 * 1024
#: files older than this are refused (stale consent); a little clock skew is allowed the other way
MAX_AGE = timedelta(days=30)
MAX_SKEW = timedelta(minutes=5)
_CHUNK = 64 * 1024
#: records per chunk: what a checkpointed import applies in one transaction
CHUNK_RECORDS = 1000


class FileRefused(Exception):
    """The file cannot be used; the message is one line and names the line number if any."""


def iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 UTC time ("2026-11-23T10:00:00Z"), as a naive UTC datetime; None if malformed."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        offset = moment.utcoffset()
        moment = moment.replace(tzinfo=None) - (offset or timedelta(0))
    return moment


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def write_signed(
    kind: str,
    sender: str,
    recipient: str,
    secret: str,
    records: Iterable[dict],
    created_at: datetime | None = None,
    header: dict | None = None,
) -> Iterator[bytes]:
    """The file as chunks of bytes (for a response or a file), signed as it streams.

    ``header``: more fields for the header line (an export's ``exchange`` and ``previous`` ids).
    """
    mac = file_mac(secret)
    first = {
        "type": "header",
        "format": kind,
        "version": VERSION,
        "from": sender,
        "to": recipient,
        "created_at": iso(created_at or clock.now()),
    } | (header or {})
    buffer = bytearray(_line(first))
    count = 0
    for record in records:
        buffer += _line(record)
        count += 1
        if len(buffer) >= _CHUNK:
            mac.update(buffer)
            yield bytes(buffer)
            buffer.clear()
    mac.update(buffer)
    buffer += _line({"type": "trailer", "records": count, "signature": "hmac-sha256:" + mac.hexdigest()})
    yield bytes(buffer)


@dataclass(frozen=True)
class Envelope:
    """What the verified header and trailer say, the SHA-256 of the whole file and of each chunk."""

    kind: str
    sender: str
    recipient: str
    created_at: datetime
    records: int
    sha256: str
    #: per chunk of CHUNK_RECORDS records: the byte offset of its first line and the SHA-256
    #: of its lines (about 100 bytes of memory per 1,000 records)
    chunks: tuple[tuple[int, bytes], ...] = ()


def _lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        line = handle.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE:
            raise FileRefused(f"line {number}: longer than {MAX_LINE // 1024} KiB")
        yield number, line


def decode(number: int, line: bytes) -> Any:
    """One line as JSON; strict UTF-8 (json.loads would guess UTF-16 or UTF-32 from bytes)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"line {number}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRefused(f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # a number too long to convert, say
        raise FileRefused(f"line {number}: not valid JSON ({str(exc).split(':')[0]})") from None
    except RecursionError:  # json.loads recurses once per level of nesting
        raise FileRefused(f"line {number}: JSON nested too deeply") from None


def verify(handle: BinaryIO, secret: str, *, kind: str, sender: str, recipient: str) -> Envelope:
    """First pass: check the signature over the whole file, then what the header says.

    Reads line by line; raises FileRefused with one line of explanation.
    """
    handle.seek(0)
    mac = file_mac(secret)
    digest = hashlib.sha256()
    header: Any = None
    previous: bytes | None = None
    count = 0
    offset = previous_offset = 0
    chunks: list[tuple[int, bytes]] = []
    chunk = hashlib.sha256()
    for number, line in _lines(handle):
        digest.update(line)
        if number == 1:
            header = decode(1, line)
            if not isinstance(header, dict) or header.get("type") != "header":
                raise FileRefused("line 1: not a partner file (no header line)")
        if previous is not None:
            mac.update(previous)
            count += 1
            if count > 1:  # a line followed by another is a record, not the trailer
                if (count - 2) % CHUNK_RECORDS == 0:
                    if count > 2:
                        chunks[-1] = (chunks[-1][0], chunk.digest())
                    chunks.append((previous_offset, b""))
                    chunk = hashlib.sha256()
                chunk.update(previous)
        previous, previous_offset = line, offset
        offset += len(line)
    if chunks:
        chunks[-1] = (chunks[-1][0], chunk.digest())
    if header is None:
        raise FileRefused("the file is empty")
    if count == 0:
        raise FileRefused("the file is cut short: no trailer line")
    trailer = decode(count + 1, previous)
    if not isinstance(trailer, dict) or trailer.get("type") != "trailer":
        raise FileRefused(f"line {count + 1}: the file is cut short (the last line is not the trailer)")
    signature = trailer.get("signature")
    expected = "hmac-sha256:" + mac.hexdigest()
    if not isinstance(signature, str) or not hmac.compare_digest(
        expected.encode(), signature.encode("utf-8", "replace")
    ):
        raise FileRefused("bad signature: the file was changed, or signed with another secret")
    records = count - 1
    if trailer.get("records") != records:
        raise FileRefused(
            f"the trailer announces {trailer.get('records')!r} records, the file holds {records}"
        )
    return _check_header(
        header, records, digest.hexdigest(), tuple(chunks), kind=kind, sender=sender, recipient=recipient
    )


def _check_header(
    header: dict,
    records: int,
    sha256: str,
    chunks: tuple[tuple[int, bytes], ...],
    *,
    kind: str,
    sender: str,
    recipient: str,
) -> Envelope:
    if header.get("format") != kind:
        raise FileRefused(f"line 1: this is a {header.get('format')!r} file, expected {kind!r}")
    if header.get("version") != VERSION:
        raise FileRefused(
            f"line 1: format version {header.get('version')!r} is not supported (only {VERSION})"
        )
    if header.get("from") != sender:
        raise FileRefused(f"line 1: the file comes from {header.get('from')!r}, not from partner {sender!r}")
    if header.get("to") != recipient:
        raise FileRefused(
            f"line 1: the file is addressed to {header.get('to')!r}, not to this store ({recipient!r})"
        )
    created_at = parse_time(header.get("created_at"))
    if created_at is None:
        raise FileRefused("line 1: created_at is not an ISO 8601 UTC time")
    now = clock.now()
    if created_at > now + MAX_SKEW:
        raise FileRefused(f"line 1: created_at {iso(created_at)} is in the future")
    if created_at < now - MAX_AGE:
        raise FileRefused(
            f"line 1: the file is older than {MAX_AGE.days} days; ask the partner for a fresh one"
        )
    return Envelope(kind, sender, recipient, created_at, records, sha256, chunks)


def records(handle: BinaryIO, envelope: Envelope) -> Iterator[tuple[int, Any]]:
    """Second pass: the records as (line number, JSON value), after ``verify``.

    The file is hashed again on the way; if it changed since ``verify`` the last step raises
    FileRefused, so callers must not commit before this iterator is exhausted.
    """
    handle.seek(0)
    digest = hashlib.sha256()
    last = envelope.records + 2
    for number, line in _lines(handle):
        digest.update(line)
        if 1 < number < last:
            yield number, decode(number, line)
    if digest.hexdigest() != envelope.sha256:
        raise FileRefused("the file changed while it was being imported; nothing was imported")


def chunks(
    handle: BinaryIO, envelope: Envelope, start: int = 0
) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
    """After ``verify``: (index of its first record, [(line number, JSON value)]) per chunk.

    Starts with the chunk that holds record ``start`` (0-based; records before it are left
    out). Each chunk is read whole and its SHA-256 compared with what ``verify`` saw before it
    is handed out, so a caller may commit a chunk before reading the next one: a file changed
    since ``verify`` raises FileRefused at the first changed chunk, none of it used.
    """
    for index in range(start // CHUNK_RECORDS, len(envelope.chunks)):
        offset, expected = envelope.chunks[index]
        first = index * CHUNK_RECORDS
        size = min(CHUNK_RECORDS, envelope.records - first)
        if start >= first + size:
            continue
        handle.seek(offset)
        digest = hashlib.sha256()
        lines = []
        for _ in range(size):
            line = handle.readline(MAX_LINE + 1)
            digest.update(line)
            lines.append(line)
        if digest.digest() != expected:
            raise FileRefused("the file changed since its signature was checked; stop changing it")
        skip = max(0, start - first)
        yield first + skip, [(first + i + 2, decode(first + i + 2, lines[i])) for i in range(skip, size)]


def header(handle: BinaryIO) -> dict:
    """The first line of a file ``verify`` accepted (its signature covers it), as a dict."""
    handle.seek(0)
    value = decode(1, handle.readline(MAX_LINE + 1))
    return value if isinstance(value, dict) else {}
