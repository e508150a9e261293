"""What the dashboard's campaign page shows beyond the report's table, built from the same report.

Every figure here comes from one ``campaigns.report.CampaignReport`` (the numbers of ``newsletter
campaign report --json``): the timeline bucketed per hour or per day, the reasons rows were
deferred or skipped, early-access redemptions and reward codes per wave. Charts are drawn by
``admin/charts.py``; each has a table of the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from markupsafe import Markup

from newsletter.admin import charts
from newsletter.campaigns.report import CampaignReport, percent

#: per hour while the campaign's activity spans at most two days; else the first day per hour and
#: every day per day (pygal takes ~1 ms a bar: a chart stays under ~100 bars)
HOURLY_SPAN = timedelta(hours=48)
FIRST_DAYS = timedelta(hours=24)


@dataclass(slots=True)
class Timeline:
    """One chart and its table: a label per bucket and a row of counts per series."""

    key: str
    title: str
    labels: list[str]
    series: dict[str, list[int]]
    chart: Markup = field(default=Markup(""))


@dataclass(slots=True)
class Reason:
    kind: str
    reason: str
    #: one count per wave, then the total
    counts: list[int]


@dataclass(slots=True)
class EarlyAccessWave:
    name: str
    delivered: int
    redemptions: int
    rate: str


@dataclass(slots=True)
class CampaignPage:
    timelines: list[Timeline]
    reasons: list[Reason]
    waves: list[EarlyAccessWave]
    reward_codes: dict[str, int] | None
    #: the campaign sends early-access links ([sale]) or carries reward codes
    early_access: bool


#: chart -> its series: (label, timeline metric)
CHARTS = {
    "sends": ("Sends", (("sent", "sent"), ("bounced", "bounced"))),
    "clicks": ("Clicks", (("clicks", "click"), ("people clicking", "clicked"))),
    "redemptions": (
        "Redemptions",
        (("early-access redemptions", "redeemed"), ("reward codes redeemed", "code_redeemed")),
    ),
}


def buckets(hours: list[datetime]) -> list[tuple[str, datetime, datetime, str]]:
    """(chart key suffix, start, end, "hour" or "day") for the span of HOURS: one range per hour for
    a campaign active up to two days, else the first day per hour and every day per day."""
    if not hours:
        return []
    first, last = min(hours), max(hours)
    if last - first <= HOURLY_SPAN:
        # at least six hours on the axis: a campaign sent in one hour still reads as a chart over time
        return [("", first, max(last, first + timedelta(hours=5)), "hour")]
    day = first.replace(hour=0)
    first_days = first + FIRST_DAYS - timedelta(hours=1)
    return [("-first-days", first, first_days, "hour"), ("-daily", day, last, "day")]


def timelines(numbers: CampaignReport, with_redemptions: bool) -> list[Timeline]:
    """The charts' numbers: each series summed into the buckets :func:`buckets` chose."""
    timeline = numbers.timeline
    found = []
    for suffix, start, end, unit in buckets([hour for hours in timeline.values() for hour in hours]):
        step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
        starts = []
        at = start
        while at <= end:
            starts.append(at)
            at += step
        index = {at: i for i, at in enumerate(starts)}
        for key, (title, series) in CHARTS.items():
            if key == "redemptions" and not with_redemptions:
                continue
            if suffix == "-first-days" and key != "sends":
                continue  # the first days per hour: sends and clicks in one chart (drawing costs)
            if suffix == "-first-days":
                title, series = "Sends and clicks", (("sent", "sent"), ("clicks", "click"))
            values = {}
            for label, metric in series:
                counts = [0] * len(starts)
                for hour, n in timeline.get(metric, {}).items():
                    bucket = hour if unit == "hour" else hour.replace(hour=0)
                    if bucket in index:
                        counts[index[bucket]] += n
                values[label] = counts
            when = "per hour (UTC)" if unit == "hour" else "per day (UTC)"
            if suffix == "-first-days":
                when = "in the first day, " + when
            labels = [f"{at:%m-%d %H:00}" if unit == "hour" else f"{at:%Y-%m-%d}" for at in starts]
            found.append(Timeline(key + suffix, f"{title} {when}", labels, values))
    return found


def build(numbers: CampaignReport, sale: bool) -> CampaignPage:
    """The page's figures from the report (SALE: it sends early-access links); the charts are drawn
    here, in the request (their stylesheet takes the response's CSP nonce)."""
    columns = [w.numbers for w in numbers.waves] + [numbers.total]
    reasons = [
        Reason(kind, key, [getattr(n, kind).get(key, 0) for n in columns])
        for kind in ("deferred", "skipped")
        for key in sorted(getattr(numbers.total, kind), key=lambda k: (-getattr(numbers.total, kind)[k], k))
    ]
    waves = [
        EarlyAccessWave(name, n.delivered, n.redemptions, percent(_share(n.redemptions, n.delivered)))
        for name, n in [(w.name, w.numbers) for w in numbers.waves] + [("total", numbers.total)]
    ]
    early_access = sale or numbers.reward_codes is not None or numbers.total.redemptions > 0
    found = timelines(numbers, early_access)
    for t in found:
        t.chart = (charts.bars if t.key.startswith("sends") else charts.line)(t.title, t.labels, t.series)
    return CampaignPage(found, reasons, waves, numbers.reward_codes, early_access)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None
