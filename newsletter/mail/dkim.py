"""DKIM signatures (RFC 6376, relaxed/relaxed) with RSA-SHA256 and, beside it, Ed25519 (RFC 8463).

Signing goes through ``cryptography`` (OpenSSL): dkimpy signs RSA in pure Python, about
10 ms for a 30 KB message against well under 1 ms here (docs/deliverability.md has the
figures). dkimpy stays the independent verifier of the tests.

The RSA key is ``DKIM_KEY_FILE`` (default ``instance/dkim/SELECTOR.pem``). An Ed25519 key
next to it, ``SELECTOR-ed25519.pem`` (same folder, ``-ed25519`` before ``.pem``), adds a
second signature under selector ``SELECTOR-ed25519``. A key file holding an Ed25519 key
signs with Ed25519 alone. Keys are read and parsed once per process.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from newsletter.core.config import ConfigError, Settings
from newsletter.mail.message import domain_of

log = logging.getLogger(__name__)

#: Signed when present, in this order; a header that occurs twice is listed twice.
SIGNED_HEADERS = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Precedence",
    "Auto-Submitted",
)
_SIGNED = {name.lower() for name in SIGNED_HEADERS}
ED25519_SUFFIX = "-ed25519"

_WSP = re.compile(rb"[ \t]+")
_FIELDS = re.compile(rb"\r\n(?![ \t])")


class DKIMError(ConfigError):
    """The DKIM settings or key cannot be used: one line naming the file and what to do."""


@dataclass(frozen=True)
class Key:
    selector: str
    algorithm: str  #: "rsa" or "ed25519" (the DNS record's k=)
    private: object  #: a cryptography private key

    @property
    def tag(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"

    def sign(self, data: bytes) -> bytes:
        if self.algorithm == "rsa":
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(hashlib.sha256(data).digest())  # RFC 8463: Ed25519 over the hash


class Signer:
    """Adds DKIM-Signature headers (one per key) to complete CRLF messages."""

    def __init__(self, domain: str, keys: list[Key]):
        self.domain = domain
        self.keys = keys

    def sign(self, data: bytes) -> bytes:
        """The message with its DKIM-Signature header(s) on top."""
        if not data.endswith(b"\r\n"):  # as SMTP will send it: the verifier sees the last line ended
            data += b"\r\n"
        split = data.find(b"\r\n\r\n")
        head, body = (data, b"") if split < 0 else (data[: split + 2], data[split + 4 :])
        fields = [f for f in _FIELDS.split(head.removesuffix(b"\r\n")) if f]
        chosen = [(name, field) for field in fields if (name := _name(field)) in _SIGNED]
        if not any(name == "from" for name, _ in chosen):
            raise ValueError("a message without From cannot be DKIM-signed")
        # hashed in the order of h=, which lists them as they stand in the message
        hashed = b"".join(_relaxed_header(field) for _, field in chosen)
        h = ":".join(name for name, _ in chosen).encode()
        bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        now = str(int(time.time())).encode()
        signatures = []
        for key in self.keys:
            unsigned = (
                b"DKIM-Signature: v=1; a=" + key.tag + b"; c=relaxed/relaxed; d=" + self.domain.encode()
                + b"; s=" + key.selector.encode() + b"; t=" + now + b";\r\n\th=" + h
                + b";\r\n\tbh=" + bh + b";\r\n\tb="
            )  # fmt: skip
            signed_part = hashed + _relaxed_header(unsigned).removesuffix(b"\r\n")
            signatures.append(unsigned + base64.b64encode(key.sign(signed_part)) + b"\r\n")
        return b"".join(reversed(signatures)) + data


def _name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def _relaxed_header(field: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, whitespace runs as one space, trimmed."""
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: whitespace runs as one space, none at line ends, no empty lines at the end."""
    # bytes.replace runs in C; a regex substitution over a 30 KB body cost more than the RSA signature
    body = body.replace(b"\t", b" ")
    while b"  " in body:  # each pass halves every run of spaces
        body = body.replace(b"  ", b" ")
    body = body.replace(b" \r\n", b"\r\n").rstrip(b" ")
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def signing_domain(settings: Settings) -> str:
    """``DKIM_DOMAIN``, else the domain of the From address."""
    return settings.dkim_domain or domain_of(settings.from_)


def ed25519_path(key_file: str | Path) -> Path:
    """Where the Ed25519 key that signs beside an RSA key lives: ``NAME-ed25519.pem``."""
    path = Path(key_file)
    return path.with_name(path.stem + ED25519_SUFFIX + path.suffix)


def load_key(path: Path, selector: str) -> Key:
    """A private key from a PEM file (PKCS#8 or PKCS#1); DKIMError in one line if unusable."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    hint = f"run 'newsletter dkim keygen --selector {selector}' or set NEWSLETTER_DKIM_KEY_FILE"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DKIMError(f"DKIM key {path} cannot be read ({exc.strerror or exc}): {hint}") from None
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DKIMError(f"DKIM key {path} is not an unencrypted PEM private key ({exc})") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 1024:
            raise DKIMError(f"DKIM key {path} has {private.key_size} bits; receivers want 2048")
        return Key(selector, "rsa", private)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return Key(selector, "ed25519", private)
    raise DKIMError(f"DKIM key {path} is neither RSA nor Ed25519")


@lru_cache(maxsize=8)
def _signer(selector: str, domain: str, key_file: str) -> Signer:
    key = load_key(Path(key_file), selector)
    keys = [key]
    companion = ed25519_path(key_file)
    if key.algorithm == "rsa" and companion.exists():
        keys.append(load_key(companion, selector + ED25519_SUFFIX))
    log.info(
        "DKIM: signing as d=%s with %s", domain, ", ".join(f"s={k.selector} ({k.algorithm})" for k in keys)
    )
    return Signer(domain, keys)


def signer_for(settings: Settings) -> Signer | None:
    """The process's signer for these settings (keys parsed once), None when DKIM is off.

    Raises DKIMError (one line) when a selector is set but its key cannot be used.
    """
    if not settings.dkim_selector:
        return None
    domain = signing_domain(settings)
    if not domain:
        raise DKIMError("DKIM: no signing domain; set NEWSLETTER_DKIM_DOMAIN")
    return _signer(settings.dkim_selector, domain, settings.dkim_key_file)


def public_record(key: Key) -> str:
    """The DNS TXT value that publishes ``key``: ``v=DKIM1; k=rsa; p=...``."""
    from cryptography.hazmat.primitives import serialization

    public = key.private.public_key()
    if key.algorithm == "rsa":  # RFC 6376: p= is the DER SubjectPublicKeyInfo
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:  # RFC 8463: p= is the raw 32-byte public key
        der = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k={key.algorithm}; p={base64.b64encode(der).decode()}"


def txt_strings(value: str) -> list[str]:
    """A TXT value cut into the strings of at most 255 characters that DNS holds (RFC 1035)."""
    return [value[i : i + 255] for i in range(0, len(value), 255)] or [""]


def generate_key(algorithm: str) -> bytes:
    """A new private key as PEM (PKCS#8): RSA-2048 or Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
