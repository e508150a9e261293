"""Clicks and opens of tracked campaigns, telling people from link scanners.

A tracked link (``/c/<token>/<n>``, made by ``campaigns.tracking``) leads only to ``links[n]`` of
the delivery's frozen campaign. Every hit is one ``delivery_events`` row with the link's index:
``click`` for a person, ``scanner`` for what looks like a mail-security scanner or a program:

- a ``HEAD`` request (browsers follow links with GET);
- a user agent in ``SCANNER_AGENTS``, or none at all (a heuristic: many scanners, Microsoft
  Defender's Safe Links among them, send an ordinary browser's user agent; hence the next rule);
- a burst: ``BURST_LINKS`` different links of one message (or all of them, if it has fewer,
  at least two) hit within ``SCAN_WINDOW`` of its sending, or within ``BURST_WINDOW`` of each
  other at any time. People click one link, scanners follow them all. The earlier hits of the
  burst, counted as clicks before the burst showed, become ``scanner`` rows too, and the
  delivery's ``first_click_at`` goes back to the first click that remains (or none).

A scanner still gets its redirect: a person may be waiting behind it. So does a click while
the database is down, if this process knows the campaign's links (the click is lost, one log line).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from newsletter.campaigns.frozen import FrozenCampaign
from newsletter.campaigns.tracking import TrackedRef
from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.feedback.record import record
from newsletter.feedback.signals import Signal
from newsletter.models import Campaign, Delivery, DeliveryEvent, SignalKind

log = logging.getLogger(__name__)

#: hits of several links this soon after sending are a scanner's
SCAN_WINDOW = timedelta(seconds=60)
#: ... and this close together at any time
BURST_WINDOW = timedelta(seconds=5)
#: how many different links make a burst (a message with fewer: all of its links, at least 2)
BURST_LINKS = 3
#: parts of user agents (case-insensitive) of mail-security scanners, link previewers and programs.
#: Heuristic, never complete: scanners change their agents, and some pretend to be browsers.
SCANNER_AGENTS = (
    # mail security gateways and their URL defences
    "barracuda",
    "proofpoint",
    "mimecast",
    "google-safety",
    "safelinks",
    "safe links",
    "microsoft defender",
    "microsoft office existence discovery",
    "trend micro",
    "trendmicro",
    "symantec",
    "messagelabs",
    "sophos",
    "forcepoint",
    "ironport",
    "fireeye",
    "fortiguard",
    "zscaler",
    "paloalto",
    "cloudmark",
    "vadesecure",
    "spamtitan",
    "bitdefender",
    "kaspersky",
    # link previews and crawlers
    "facebookexternalhit",
    "slackbot",
    "twitterbot",
    "linkedinbot",
    "whatsapp",
    "telegrambot",
    "discordbot",
    "skypeuripreview",
    "crawler",
    "spider",
    # headless browsers and HTTP libraries
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww-perl",
    "apache-httpclient",
    "node-fetch",
)
# "bot" as a word (Googlebot/2.1, AhrefsBot), but not the phone maker Cubot
_AGENTS = re.compile("|".join([*map(re.escape, SCANNER_AGENTS), r"(?<!cu)bot\b"]), re.IGNORECASE)


def is_scanner_agent(user_agent: str | None) -> bool:
    """True for no user agent or one of SCANNER_AGENTS."""
    return not (user_agent or "").strip() or _AGENTS.search(user_agent or "") is not None


# --- the frozen links of a campaign, cached per process -------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignLinks:
    """What the routes need of a frozen campaign."""

    content_hash: str
    clicks: bool
    opens: bool
    links: tuple[str, ...]
    #: wave id -> the link indices its emails hold (in any of its languages)
    per_wave: Mapping[int, frozenset[int]]


_CACHE_SIZE = 256
_cache: OrderedDict[int, CampaignLinks] = OrderedDict()
_cache_lock = threading.Lock()


def campaign_links(session: Session, campaign_id: int, content_hash: str) -> CampaignLinks | None:
    """The campaign's tracked links; read from ``compiled`` once per process and campaign version."""
    with _cache_lock:
        found = _cache.get(campaign_id)
        if found is not None and found.content_hash == content_hash:
            _cache.move_to_end(campaign_id)
            return found
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        return None
    frozen = FrozenCampaign.of(campaign)
    found = CampaignLinks(
        content_hash=campaign.content_hash,
        clicks=frozen.track_clicks,
        opens=frozen.track_opens,
        links=frozen.links,
        # a wave's emails in every language: a variant may hold links the default does not
        per_wave={
            w.id: frozenset(i for email in frozen.emails_of(w.name) for i in email.links)
            for w in campaign.waves
        },
    )
    with _cache_lock:
        _cache[campaign_id] = found
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def known_link(campaign_id: int, n: int) -> str | None:
    """links[n] of a campaign this process has seen, without the database (outages)."""
    with _cache_lock:
        found = _cache.get(campaign_id)
    if found is None or not found.clicks or not 0 <= n < len(found.links):
        return None
    return found.links[n]


# --- following a link ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Followed:
    url: str
    kind: SignalKind


def _delivery(session: Session, ref: TrackedRef) -> tuple[Delivery, CampaignLinks] | None:
    row = session.execute(
        select(Delivery, Campaign.content_hash)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .where(Delivery.id == ref.delivery_id)
        .with_for_update(of=Delivery)  # one hit of a message at a time: bursts are seen whole
    ).first()
    if row is None or row[0].campaign_id != ref.campaign_id:
        return None
    found = campaign_links(session, ref.campaign_id, row[1])
    return (row[0], found) if found is not None else None


def follow(
    session: Session, settings: Settings, ref: TrackedRef, n: int, *, method: str, user_agent: str | None
) -> Followed | None:
    """Record one hit of link ``n`` and return where it leads; None if the message has no such link."""
    found = _delivery(session, ref)
    if found is None:
        return None
    delivery, campaign = found
    in_email = campaign.per_wave.get(delivery.wave_id, frozenset())
    if not campaign.clicks or n not in in_email or n >= len(campaign.links):
        return None
    now = clock.now()
    kind = SignalKind.SCANNER if method == "HEAD" or is_scanner_agent(user_agent) else SignalKind.CLICK
    earlier_clicks = _burst(session, delivery, n, len(in_email), now)
    if earlier_clicks is not None:
        kind = SignalKind.SCANNER
        _reclassify(session, delivery, earlier_clicks)
    record(
        session,
        settings,
        Signal(kind, "web", delivery_id=delivery.id, link=n, user_agent=user_agent, at=now),
    )
    return Followed(campaign.links[n], kind)


def _burst(session: Session, delivery: Delivery, n: int, link_count: int, now) -> list[int] | None:
    """The ids of the earlier click rows of a burst this hit is part of; None: no burst."""
    need = min(link_count, BURST_LINKS)
    if need < 2:
        return None
    early = delivery.sent_at is not None and now - delivery.sent_at <= SCAN_WINDOW
    since = delivery.sent_at if early else now - BURST_WINDOW
    hits = session.execute(
        select(DeliveryEvent.id, DeliveryEvent.link, DeliveryEvent.kind).where(
            DeliveryEvent.delivery_id == delivery.id,
            DeliveryEvent.kind.in_([SignalKind.CLICK, SignalKind.SCANNER]),
            DeliveryEvent.at >= since,
        )
    ).all()
    if len({link for _, link, _ in hits} | {n}) < need:
        return None
    return [event_id for event_id, _, kind in hits if kind == SignalKind.CLICK]


def _reclassify(session: Session, delivery: Delivery, click_ids: list[int]) -> None:
    """The burst's earlier clicks were a scanner's; first_click_at follows the clicks that remain."""
    if not click_ids:
        return
    session.execute(
        update(DeliveryEvent)
        .where(DeliveryEvent.id.in_(click_ids))
        .values(kind=SignalKind.SCANNER)
        .execution_options(synchronize_session=False)
    )
    delivery.first_click_at = session.scalar(
        select(func.min(DeliveryEvent.at)).where(
            DeliveryEvent.delivery_id == delivery.id, DeliveryEvent.kind == SignalKind.CLICK
        )
    )


def open_pixel(session: Session, settings: Settings, ref: TrackedRef, *, user_agent: str | None) -> bool:
    """Record the first open of a message of a campaign tracking opens; False if nothing was recorded."""
    found = _delivery(session, ref)
    if found is None or not found[1].opens or found[0].opened_at is not None:
        return False  # only the first open: later ones say nothing more (and MPP makes them noise)
    record(session, settings, Signal(SignalKind.OPEN, "web", delivery_id=found[0].id, user_agent=user_agent))
    return True
