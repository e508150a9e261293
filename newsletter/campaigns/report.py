"""A campaign's numbers, per wave and in total: what was sent, what came back, and its rates.

Read from the tallies the database keeps (campaigns/tallies.py): a few rows per campaign, whatever
its size, exact at the moment of the read. ``recount=True`` counts the same numbers from the
deliveries and events themselves (one GROUP BY over the campaign's deliveries, one over its click
events): the tests hold the two equal. ``campaign status``, ``campaign report`` and the dashboard
read the same code. Rates are over delivered messages (the relay said 250);
``None`` (shown "n/a") while nothing was delivered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from newsletter.campaigns import tallies
from newsletter.campaigns.frozen import FrozenCampaign
from newsletter.core.config import Settings
from newsletter.models import Campaign, Delivery, DeliveryEvent, DeliveryState, SignalKind

OPENS_NOTE = "opens are unreliable: Apple Mail Privacy Protection loads every image, so many are not people"
#: skips past the deadline name each person's next allowed time: group them by what they say
_PAST_DEADLINE = re.compile(r": next allowed [-0-9]+ [0-9:]+ UTC, after the deadline$")
_WITH_REASON = ("skipped", "deferred", "failed", "uncertain")


def delivery_groups(session: Session, campaign_id: int) -> list[Any]:
    """The campaign's deliveries grouped by wave, state and reason, with the feedback counted.

    The full recount (a scan of the campaign's deliveries): :func:`tallies.groups` gives the same.
    """
    return session.execute(
        select(
            Delivery.wave_id,
            Delivery.state,
            Delivery.reason,
            func.count().label("n"),
            func.count(case((Delivery.bounce_kind == "hard", 1))).label("hard"),
            func.count(case((Delivery.bounce_kind == "soft", 1))).label("soft"),
            func.count(Delivery.complained_at).label("complained"),
            func.count(Delivery.unsubscribed_at).label("unsubscribed"),
            func.count(Delivery.opened_at).label("opened"),
            func.count(Delivery.first_click_at).label("clicked"),
            func.count(Delivery.redeemed_at).label("redeemed"),
            func.count(Delivery.reward_code).label("codes"),
            func.count(Delivery.reward_redeemed_at).label("codes_redeemed"),
        )
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.wave_id, Delivery.state, Delivery.reason)
    ).all()


def reason_key(reason: str) -> str:
    """A row's reason as it is counted: retries without the SMTP answer, skips without the time."""
    if reason.startswith("retry"):
        reason = reason.split(":")[0]
    return _PAST_DEADLINE.sub(", next allowed after the deadline", reason)


@dataclass(slots=True)
class Rate:
    """``count`` out of ``delivered``, and the limit that pauses the campaign (if there is one)."""

    count: int
    delivered: int
    limit: float | None = None

    @property
    def value(self) -> float | None:
        return self.count / self.delivered if self.delivered else None

    @property
    def over(self) -> bool:
        return self.limit is not None and self.value is not None and self.value > self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "delivered": self.delivered,
            "rate": self.value,
            "limit": self.limit,
            "over": self.over,
        }


@dataclass(slots=True)
class Numbers:
    """One wave's numbers, or the campaign's total."""

    delivered: int = 0
    queued: int = 0
    sending: int = 0
    failed: int = 0
    uncertain: int = 0
    #: reason -> rows
    deferred: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    unsubscribed: int = 0
    #: None when the campaign does not track opens
    opens: int | None = None
    unique_clicks: int = 0
    redemptions: int = 0

    def add(self, row, track_opens: bool) -> None:
        kind = getattr(row.state, "value", row.state)
        if kind == DeliveryState.CLAIMED.value:
            kind = DeliveryState.SENDING.value  # a batch holds it either way
        if kind in ("deferred", "skipped"):
            reasons = getattr(self, kind)
            key = reason_key(row.reason or "no reason given")
            reasons[key] = reasons.get(key, 0) + row.n
        elif kind == DeliveryState.SENT.value:
            self.delivered += row.n
        else:
            setattr(self, kind, getattr(self, kind) + row.n)
        self.bounced_hard += row.hard
        self.bounced_soft += row.soft
        self.complained += row.complained
        self.unsubscribed += row.unsubscribed
        self.unique_clicks += row.clicked
        self.redemptions += row.redeemed
        if track_opens:
            self.opens = (self.opens or 0) + row.opened

    def merge(self, other: Numbers) -> None:
        for name in ("delivered", "queued", "sending", "failed", "uncertain", "bounced_hard"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("bounced_soft", "complained", "unsubscribed", "unique_clicks", "redemptions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.opens is not None:
            self.opens = (self.opens or 0) + other.opens
        for name in ("deferred", "skipped"):
            mine = getattr(self, name)
            for key, n in getattr(other, name).items():
                mine[key] = mine.get(key, 0) + n

    def rates(self, settings: Settings) -> dict[str, Rate]:
        return {
            "bounce": Rate(self.bounced_hard, self.delivered, settings.max_bounce_rate),
            "complaint": Rate(self.complained, self.delivered, settings.max_complaint_rate),
            "unsubscribe": Rate(self.unsubscribed, self.delivered),
            "click": Rate(self.unique_clicks, self.delivered),
        }


@dataclass(slots=True)
class WaveReport:
    name: str
    status: str
    send_at: str
    numbers: Numbers


@dataclass(slots=True)
class LinkClicks:
    """Clicks on one tracked link (people), and the link scanners' visits counted apart."""

    link: int | None
    url: str | None
    clicks: int = 0
    scanners: int = 0


@dataclass(slots=True)
class CampaignReport:
    campaign: str
    name: str
    status: str
    pause_reason: str | None
    track_opens: bool
    track_clicks: bool
    waves: list[WaveReport]
    total: Numbers
    links: list[LinkClicks]
    settings: Settings = field(repr=False)
    #: [reward] campaigns: codes assigned to deliveries and redeemed at the store (None: no codes)
    reward_codes: dict[str, int] | None = None
    #: metric -> {hour (UTC): count}: sent, bounced, complained, unsubscribed, clicked (first
    #: clicks), click (click events), scanner, redeemed (early access), code_redeemed
    timeline: dict[str, dict[datetime, int]] = field(default_factory=dict)
    #: campaigns with language variants: delivered emails per language sent (None: one language)
    languages: dict[str, int] | None = None

    @property
    def opens_note(self) -> str | None:
        return OPENS_NOTE if self.track_opens else None

    def to_json(self) -> dict[str, Any]:
        def numbers(n: Numbers) -> dict[str, Any]:
            data = asdict(n)
            if not self.track_opens:
                data.pop("opens")
            data["rates"] = {name: rate.to_json() for name, rate in n.rates(self.settings).items()}
            return data

        return {
            "campaign": self.campaign,
            "name": self.name,
            "status": self.status,
            "pause_reason": self.pause_reason,
            "track_opens": self.track_opens,
            "track_clicks": self.track_clicks,
            "opens_note": self.opens_note,
            "waves": [
                {"name": w.name, "status": w.status, "send_at": w.send_at, **numbers(w.numbers)}
                for w in self.waves
            ],
            "total": numbers(self.total),
            "links": [asdict(link) for link in self.links],
            "reward_codes": self.reward_codes,
            "languages": self.languages,
            "timeline": {
                metric: {f"{hour:%Y-%m-%dT%H:00:00Z}": n for hour, n in sorted(hours.items())}
                for metric, hours in sorted(self.timeline.items())
            },
        }


def report(session: Session, settings: Settings, campaign: Campaign, recount: bool = False) -> CampaignReport:
    """The numbers of one scheduled campaign, per wave and in total (RECOUNT: from the rows themselves)."""
    frozen = FrozenCampaign.of(campaign)
    track_opens = _flag(frozen, campaign.compiled, "track_opens")
    track_clicks = _flag(frozen, campaign.compiled, "track_clicks")
    waves = {
        w.id: WaveReport(
            w.name, w.status.value, w.send_at.isoformat() + "Z", Numbers(opens=0 if track_opens else None)
        )
        for w in campaign.waves
    }
    rows = delivery_groups(session, campaign.id) if recount else tallies.groups(session, campaign.id)
    for row in rows:
        wave = waves.get(row.wave_id)
        if wave is not None:
            wave.numbers.add(row, track_opens)
    total = Numbers(opens=0 if track_opens else None)
    for wave in waves.values():
        total.merge(wave.numbers)
    return CampaignReport(
        campaign=campaign.slug,
        name=campaign.name,
        status=campaign.status.value,
        pause_reason=campaign.pause_reason,
        track_opens=track_opens,
        track_clicks=track_clicks,
        waves=list(waves.values()),
        total=total,
        links=_links(session, campaign.id, _urls(frozen, campaign.compiled), recount),
        settings=settings,
        reward_codes=tallies.reward_codes(rows) if frozen.reward else None,
        timeline=_timeline(session, campaign.id) if recount else tallies.hours(session, campaign.id),
        languages=delivered_by_language(session, campaign.id) if frozen.variants else None,
    )


def delivered_by_language(session: Session, campaign_id: int) -> dict[str, int]:
    """Delivered emails per language sent (``deliveries.language``), most first. A scan of the
    campaign's sent rows, made only for campaigns with variants (the tallies keep no languages)."""
    rows = session.execute(
        select(Delivery.language, func.count())
        .where(Delivery.campaign_id == campaign_id, Delivery.state == DeliveryState.SENT)
        .group_by(Delivery.language)
    ).all()
    counted = {language or "unknown": n for language, n in rows}
    return dict(sorted(counted.items(), key=lambda item: (-item[1], item[0])))


@dataclass(slots=True)
class Table:
    """The report as rows of text cells, one column per wave and the total: what `campaign report`
    prints and the dashboard's campaign page shows, built once here."""

    title: str
    heads: list[str]
    #: (label, one cell per column); a label starting with two spaces is a reason under the row above
    rows: list[tuple[str, list[str]]]
    #: lines after the table: clicks per link, reward codes, the note on opens
    notes: list[str]


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def table(numbers: CampaignReport) -> Table:
    """The report's cells as text (rates as percentages, OVER past a limit)."""
    title = f"{numbers.campaign}: {numbers.status}"
    if numbers.pause_reason:
        title += f" ({numbers.pause_reason})"
    columns = [*numbers.waves, None]
    cells = [w.numbers if w else numbers.total for w in columns]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values) -> None:
        rows.append((label, [str(v) for v in values]))

    row("delivered", [n.delivered for n in cells])
    for kind in ("deferred", "skipped"):
        reasons = sorted({key for n in cells for key in getattr(n, kind)})
        row(kind, [sum(getattr(n, kind).values()) for n in cells])
        for key in reasons:
            row(f"  {key}", [getattr(n, kind).get(key, 0) for n in cells])
    for label, name in (
        ("queued", "queued"),
        ("sending", "sending"),
        ("failed", "failed"),
        ("uncertain", "uncertain"),
        ("bounced hard", "bounced_hard"),
        ("bounced soft", "bounced_soft"),
        ("complained", "complained"),
        ("unsubscribed", "unsubscribed"),
    ):
        row(label, [getattr(n, name) for n in cells])
    if numbers.track_opens:
        row("opens *", [n.opens for n in cells])
    row("unique clicks", [n.unique_clicks for n in cells])
    row("early-access redemptions", [n.redemptions for n in cells])
    for name in ("bounce", "complaint", "unsubscribe", "click"):
        rates = [n.rates(numbers.settings)[name] for n in cells]
        limit = rates[0].limit
        label = f"{name} rate" + (f" (limit {limit:.2%})" if limit is not None else "")
        row(label, [percent(r.value) + (" OVER" if r.over else "") for r in rates])
    notes = []
    if numbers.links:
        notes.append("clicks per link (link scanners counted apart):")
        for link in numbers.links:
            name = link.url or "(link not in the frozen campaign)"
            notes.append(f"  #{link.link}: {link.clicks} clicks, {link.scanners} scanner visits  {name}")
    if numbers.languages:
        notes.append(
            "delivered per language: " + ", ".join(f"{lang} {n}" for lang, n in numbers.languages.items())
        )
    if numbers.reward_codes is not None:
        codes = numbers.reward_codes
        notes.append(f"reward codes: {codes['assigned']} assigned, {codes['redeemed']} redeemed")
    if numbers.opens_note:
        notes.append(f"* {numbers.opens_note}")
    return Table(title, [w.name if w else "total" for w in columns], rows, notes)


def reward_counts(session: Session, campaign_id: int) -> dict[str, int]:
    """Reward codes assigned to the campaign's deliveries, and how many the store reported redeemed."""
    assigned, redeemed = session.execute(
        select(func.count(Delivery.reward_code), func.count(Delivery.reward_redeemed_at)).where(
            Delivery.campaign_id == campaign_id
        )
    ).one()
    return {"assigned": assigned, "redeemed": redeemed}


def _links(session: Session, campaign_id: int, urls: list[str], recount: bool) -> list[LinkClicks]:
    """Clicks and scanner visits per link (RECOUNT: from the events index)."""
    rows = (
        tallies.link_counts(session, campaign_id)
        if not recount
        else session.execute(
            select(DeliveryEvent.link, DeliveryEvent.kind, func.count())
            .where(
                DeliveryEvent.campaign_id == campaign_id,
                DeliveryEvent.kind.in_([SignalKind.CLICK, SignalKind.SCANNER]),
            )
            .group_by(DeliveryEvent.link, DeliveryEvent.kind)
        ).all()
    )
    links = {i: LinkClicks(i, url) for i, url in enumerate(urls)}
    for link, kind, n in rows:
        entry = links.setdefault(link, LinkClicks(link, _url(urls, link)))
        if kind == SignalKind.CLICK:
            entry.clicks += n
        else:
            entry.scanners += n
    return sorted(links.values(), key=lambda e: (e.link is None, e.link or 0))


#: timeline metric -> the deliveries' timestamp it counts (the tallies' triggers count the same)
_TIMES = {
    "sent": Delivery.sent_at,
    "bounced": Delivery.bounced_at,
    "complained": Delivery.complained_at,
    "unsubscribed": Delivery.unsubscribed_at,
    "clicked": Delivery.first_click_at,
    "redeemed": Delivery.redeemed_at,
    "code_redeemed": Delivery.reward_redeemed_at,
}


def _timeline(session: Session, campaign_id: int) -> dict[str, dict[datetime, int]]:
    """The timeline recounted from every row, bucketed here (the recount is for tests, not speed)."""
    found: dict[str, dict[datetime, int]] = {}

    def count(metric: str, at: datetime) -> None:
        hour = at.replace(minute=0, second=0, microsecond=0)
        found.setdefault(metric, {})[hour] = found.get(metric, {}).get(hour, 0) + 1

    for metric, column in _TIMES.items():
        where = (Delivery.campaign_id == campaign_id, column.is_not(None))
        for at in session.scalars(select(column).where(*where)):
            count(metric, at)
    for kind, at in session.execute(
        select(DeliveryEvent.kind, DeliveryEvent.at).where(
            DeliveryEvent.campaign_id == campaign_id,
            DeliveryEvent.kind.in_([SignalKind.CLICK, SignalKind.SCANNER]),
        )
    ):
        count(getattr(kind, "value", kind), at)
    return found


# The tracked links and flags are added to the frozen campaign by the click-tracking work of
# issue 12: read them defensively so that the report works with and without them.
def _flag(frozen: FrozenCampaign, compiled: Mapping[str, Any] | None, name: str) -> bool:
    return bool(getattr(frozen, name, None) or (compiled or {}).get(name))


def _urls(frozen: FrozenCampaign, compiled: Mapping[str, Any] | None) -> list[str]:
    links = getattr(frozen, "links", None) or (compiled or {}).get("links") or []
    return [link if isinstance(link, str) else str((link or {}).get("url", "")) for link in links]


def _url(urls: list[str], link: int | None) -> str | None:
    return urls[link] if link is not None and 0 <= link < len(urls) else None


def with_reasons(state_value: str) -> bool:
    """Whether rows in this state carry a reason worth counting (``campaign status``)."""
    return state_value in _WITH_REASON
