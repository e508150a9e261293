"""Click and open tracking, applied when a campaign is frozen (``track_clicks``/``track_opens``).

Every ``http(s)`` link of an ``<a href>`` in the compiled HTML goes into the campaign's list of
links (one index per distinct URL) and its ``href`` becomes a personal value, ``click_url``,
followed by ``/<index>``: ``{BASE_URL}/c/<token>/<index>`` for each recipient. ``<token>`` is one
signed token per delivery (made once per message, whatever the number of links): the
campaign's and the delivery's ids in base 36 and an HMAC of both under the secret key, e.g.
``2x-1k2-7hq3mzx0b4rta9cq``. The redirect goes only to ``links[index]`` of the frozen campaign,
so a link cannot be bent into an open redirect. Personal links (unsubscribe, preferences,
early access) are slot tokens, not ``http`` URLs, and stay as they are; so do ``mailto:``,
``tel:``, anchors and URLs with a personal value inside them. The plain-text part keeps its
links: a reader of plain text sees where a link goes, and such clicks are not counted.

The open pixel (only with ``track_opens``) is a 1x1 image at ``{BASE_URL}/o/<token>`` at the
end of the HTML. The routes live in ``newsletter.feedback.views``.
"""

from __future__ import annotations

import html as html_escaping
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from newsletter.campaigns.frozen import FrozenEmail
from newsletter.core import tags
from newsletter.core.config import Settings
from newsletter.mail.skeleton import SLOT, slot_token

CLICK_URL = "click_url"  #: the personal value ``{BASE_URL}/c/<token>``
OPEN_URL = "open_url"  #: the personal value ``{BASE_URL}/o/<token>``
_CLICK_SLOT = slot_token(CLICK_URL, "url")
_OPEN_SLOT = slot_token(OPEN_URL, "url")
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_WEB = re.compile(r"https?://[^\s/?#]+", re.IGNORECASE)
#: its own key: a click token is never a valid VERP tag (mail/verp.py), nor the reverse
_PURPOSE = "click"
_TOKEN = re.compile(r"([0-9a-z]{1,13})-([0-9a-z]{1,13})-([a-z2-7]{16})")
K = TypeVar("K")
PIXEL = (
    f'<img src="{_OPEN_SLOT}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0;margin:0;padding:0;" />'
)


def _rewrite(html: str, links: dict[str, int]) -> tuple[str, tuple[int, ...]]:
    """Each tracked ``href`` replaced by its slot and index; ``links`` (URL -> index) grows."""
    used: dict[int, None] = {}

    def anchor(tag: re.Match) -> str:
        def href(match: re.Match) -> str:
            raw = match.group(2) if match.group(2) is not None else match.group(3)
            url = html_escaping.unescape(raw).strip()
            if not _WEB.match(url) or SLOT.search(url):
                return match.group()
            index = links.setdefault(url, len(links))
            used[index] = None
            return f'{match.group(1)}"{_CLICK_SLOT}/{index}"'

        return _HREF.sub(href, tag.group(), count=1)

    return _ANCHOR.sub(anchor, html), tuple(used)


def _with_pixel(html: str) -> str:
    end = html.lower().rfind("</body>")
    return html + PIXEL if end < 0 else html[:end] + PIXEL + html[end:]


def apply(
    emails: Mapping[K, FrozenEmail], *, clicks: bool, opens: bool
) -> tuple[dict[K, FrozenEmail], tuple[str, ...]]:
    """The waves' emails with tracked links (and the pixel), and the campaign's list of links; keyed
    as given (wave names, or (language, wave) when a campaign has variants: one list for them all)."""
    links: dict[str, int] = {}
    tracked = {}
    for name, email in emails.items():
        html, used, slots = email.html, (), dict(email.slots)
        if clicks:
            html, used = _rewrite(html, links)
            if used:
                slots[_CLICK_SLOT] = (CLICK_URL, "url", "")
        if opens:
            html = _with_pixel(html)
            slots[_OPEN_SLOT] = (OPEN_URL, "url", "")
        tracked[name] = replace(email, html=html, slots=slots, links=used)
    return tracked, tuple(links)


# --- the per-delivery token ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackedRef:
    """What a verified token names."""

    campaign_id: int
    delivery_id: int


def make_token(settings: Settings, campaign_id: int, delivery_id: int) -> str:
    """One delivery's token, e.g. ``2x-1k2-7hq3mzx0b4rta9cq`` (one HMAC per message)."""
    body = f"{tags.base36(campaign_id)}-{tags.base36(delivery_id)}"
    return f"{body}-{tags.sign(settings, _PURPOSE, body)}"


def read_token(settings: Settings, token: str) -> TrackedRef | None:
    """The campaign and delivery a token names if its signature verifies (old keys too); else None."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    campaign, delivery, mac = match.groups()
    if not tags.verifies(settings, _PURPOSE, f"{campaign}-{delivery}", mac):
        return None
    return TrackedRef(int(campaign, 36), int(delivery, 36))


def personal_urls(settings: Settings, campaign_id: int, delivery_id: int) -> dict[str, str]:
    """The personal values of a tracked campaign's message: its click and open URLs."""
    base = settings.base_url.rstrip("/")
    token = make_token(settings, campaign_id, delivery_id)
    return {CLICK_URL: f"{base}/c/{token}", OPEN_URL: f"{base}/o/{token}"}
