"""The engine's signer (key derived once, no zlib attempt) against stock itsdangerous.

Links already in people's mailboxes were made by stock itsdangerous; links made now must read
the same way, in the engine and in anything else that checks them with itsdangerous. They are
the same bytes unless zlib would have shortened the payload (a repetitive address hash): then
ours is the uncompressed form, which every itsdangerous reader takes too.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from newsletter.core import clock
from newsletter.core.config import load_settings
from newsletter.subscribers import links, tokens
from newsletter.subscribers.tokens import Purpose

PAYLOADS = [
    {"s": 1, "h": "0123456789abcdef"},
    {"s": 123456789, "h": "fedcba9876543210", "t": "early-access", "c": 42},
    {"s": 7, "h": "3f9a0c21d4e87b65", "r": 99},
    {"s": 3, "h": "a1b2c3d4e5f60718", "t": "ünïcode-topic", "c": 1},
    {"i": 5, "h": "0123456789abcdef"},
]
#: payloads zlib shortens: stock itsdangerous compresses them
REPETITIVE = [
    {"s": 7, "h": "00000000aaaaaaaa", "r": 99},
    {"s": 3, "h": "abcdefabcdefabcd", "t": "early-access", "c": 1},
    {"s": 1, "h": "0123456789abcdef", "t": "a" * 200},
]


@pytest.fixture(autouse=True)
def one_second(monkeypatch):
    """Both signers stamp the same second."""
    moment = datetime(2026, 3, 1, 12, 0, 0)
    monkeypatch.setattr(clock, "now", lambda: moment)


class _StockClockSigner(TimestampSigner):
    """Stock itsdangerous with the engine's clock (what tokens.py did before it cached)."""

    def get_timestamp(self) -> int:
        return int(clock.now().replace(tzinfo=UTC).timestamp())


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        tmp_path, environ={"NEWSLETTER_SECRET_KEY": "new-key", "NEWSLETTER_SECRET_KEY_FALLBACKS": "old-key"}
    )


def stock(key: str, purpose: Purpose) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=purpose.value, signer=_StockClockSigner)


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("payload", PAYLOADS)
def test_same_bytes_as_stock_itsdangerous(settings, purpose, payload):
    ours = tokens.make_token(settings, purpose, payload)
    assert ours == stock("new-key", purpose).dumps(payload)
    assert stock("new-key", purpose).loads(ours) == payload


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("payload", REPETITIVE)
def test_compressible_payloads_read_both_ways(settings, purpose, payload):
    compressed = stock("new-key", purpose).dumps(payload)
    assert compressed.startswith(".")  # stock zlib'd it
    assert tokens.read_token(settings, purpose, compressed, None) == payload  # links already sent
    ours = tokens.make_token(settings, purpose, payload)
    assert not ours.startswith(".")
    assert stock("new-key", purpose).loads(ours) == payload
    assert tokens.read_token(settings, purpose, ours, None) == payload


@pytest.mark.parametrize("purpose", list(Purpose))
def test_links_signed_with_an_old_key_still_read(settings, purpose):
    old = stock("old-key", purpose).dumps(PAYLOADS[1])
    assert tokens.read_token(settings, purpose, old, None) == PAYLOADS[1]


def test_wrong_purpose_or_key_is_refused(settings):
    token = tokens.make_token(settings, Purpose.UNSUBSCRIBE, PAYLOADS[0])
    with pytest.raises(tokens.TokenError):
        tokens.read_token(settings, Purpose.PREFERENCES, token, None)
    with pytest.raises(Exception):  # noqa: B017 - itsdangerous' BadSignature
        stock("other-key", Purpose.UNSUBSCRIBE).loads(token)


def test_link_helpers_sign_like_stock(settings):
    class Who:
        id = 12
        email_hash = "0123456789abcdef" * 4

    url = links.unsubscribe_url(settings, Who, topic="news", campaign_id=3)
    theirs = stock("new-key", Purpose.UNSUBSCRIBE).dumps(
        {"s": 12, "h": "0123456789abcdef", "t": "news", "c": 3}
    )
    assert url.endswith("/unsubscribe/" + theirs)
