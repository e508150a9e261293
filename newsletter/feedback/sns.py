"""Amazon SNS messages: the signature checked as AWS documents it, before anything is believed.

A message is signed by SNS with the key of an X.509 certificate it names by URL
(``SigningCertURL``). The classic forgery is a message naming a certificate of the forger's own:
so the URL must be https on ``sns.<region>.amazonaws.com`` (or ``.amazonaws.com.cn``), and the
certificate is fetched from there once and cached in memory and in ``SNS_CERT_DIR`` under the
SHA-256 of its URL. A certificate already in that folder is trusted without a fetch: that is
how an installation without outbound HTTPS (and the test suite, which signs with its own key)
provides it. Whoever can write that folder can already change the code, so it adds no hole.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger(__name__)

#: a notification older than this is refused (a replay); SNS's default retries end well before
MAX_AGE = timedelta(hours=1)
#: clocks differ: a message this far in the future is still believed
SKEW = timedelta(minutes=5)
FETCH_TIMEOUT = 10
_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d\.amazonaws\.com(?:\.cn)?")
#: the fields each type signs, in the documented (alphabetical) order
_SUBSCRIPTION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _SUBSCRIPTION,
    "UnsubscribeConfirmation": _SUBSCRIPTION,
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_certs: dict[str, x509.Certificate] = {}

#: ``fetch(url) -> bytes``: an https GET with a timeout (tests pass their own: AWS is not reachable)
Fetch = Callable[[str], bytes]


class Refused(Exception):
    """The message is not believed; ``status`` is the HTTP answer (400, 403, 502)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


def fetch_https(url: str) -> bytes:
    """GET an https URL (certificate checked by the default context), at most 1 MiB, with a timeout."""
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310 - https only, checked
        return answer.read(1024 * 1024)


def aws_url(url: Any, what: str) -> str:
    """The URL if it is https on an SNS host of AWS; otherwise refused (a forger's own server)."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None
    except ValueError:  # "https://[x" or a port that is no number
        parts = port = None
    if parts is None or parts.scheme != "https" or not _HOST.fullmatch(parts.hostname or "") or port:
        raise Refused(f"{what} is not an https URL on sns.<region>.amazonaws.com")
    return url


def cert_path(cert_dir: Path, url: str) -> Path:
    """Where the certificate of this URL is cached (and where an operator may place it)."""
    return cert_dir / f"{hashlib.sha256(url.encode()).hexdigest()}.pem"


def _certificate(url: str, cert_dir: Path, fetch: Fetch) -> x509.Certificate:
    if url in _certs:
        return _certs[url]
    path = cert_path(cert_dir, url)
    if path.exists():
        data = path.read_bytes()
    else:
        try:
            data = fetch(url)
        except Exception as exc:  # any failure of the network is one answer: not verifiable now
            log.warning("SNS certificate %s could not be fetched: %s", url, exc)
            raise Refused("the signing certificate could not be fetched; try again later", 502) from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise Refused("the signing certificate is not a PEM certificate", 502) from None
    if not path.exists():
        cert_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    _certs[url] = cert
    return cert


def _timestamp(value: Any, now: datetime) -> None:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Refused("Timestamp is not an ISO 8601 time", 400) from None
    at = at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at
    if at < now - MAX_AGE or at > now + SKEW:
        raise Refused("Timestamp is outside the accepted window (a replay or a wrong clock)")


def canonical(message: Mapping[str, Any]) -> bytes:
    """The string SNS signs: ``Key\\nValue\\n`` for each signed field present, in order."""
    lines = []
    for key in _SIGNED[message["Type"]]:
        if key in message and message[key] is not None:
            lines.append(f"{key}\n{message[key]}\n")
    return "".join(lines).encode()


def verify(message: Any, topics: tuple[str, ...], cert_dir: Path, now: datetime, fetch: Fetch) -> dict:
    """The message if its type, topic, time and signature check out; else :class:`Refused`."""
    if not isinstance(message, dict):
        raise Refused("the body is not an SNS message (a JSON object)", 400)
    kind = message.get("Type")
    if kind not in _SIGNED:
        raise Refused("Type is missing or not an SNS message type", 400)
    for key in _SIGNED[kind]:
        if key != "Subject" and not isinstance(message.get(key), str):
            raise Refused(f"{key} is missing", 400)
    for key in ("Signature", "SigningCertURL", "SignatureVersion"):
        if not isinstance(message.get(key), str):
            raise Refused(f"{key} is missing", 400)
    if message["TopicArn"] not in topics:
        raise Refused("TopicArn is not one of NEWSLETTER_SNS_TOPIC_ARNS")
    algorithm = _HASHES.get(message["SignatureVersion"])
    if algorithm is None:
        raise Refused("SignatureVersion must be 1 or 2", 400)
    _timestamp(message["Timestamp"], now)
    url = aws_url(message["SigningCertURL"], "SigningCertURL")
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise Refused("Signature is not base64", 400) from None
    cert = _certificate(url, cert_dir, fetch)
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("the signing certificate has no RSA key")
    valid = (cert.not_valid_before_utc.replace(tzinfo=None), cert.not_valid_after_utc.replace(tzinfo=None))
    if not valid[0] <= now <= valid[1]:
        raise Refused("the signing certificate is not valid now")
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise Refused("bad signature") from None
    return message


def confirm_subscription(message: Mapping[str, Any], fetch: Fetch) -> None:
    """Confirm a (verified) subscription by GETting its SubscribeURL, on AWS only."""
    url = aws_url(message["SubscribeURL"], "SubscribeURL")
    log.info("confirming SNS subscription to %s: %s", message["TopicArn"], url)
    try:
        fetch(url)
    except Exception as exc:  # the operator can still confirm by hand: the URL is in the log
        log.warning("SNS subscription could not be confirmed (open %s by hand): %s", url, exc)
        raise Refused("the subscription could not be confirmed; open SubscribeURL by hand", 502) from None
