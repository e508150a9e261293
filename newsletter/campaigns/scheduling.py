"""From a campaign folder to a frozen, scheduled campaign; and the operator's controls."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns import state, tallies, tracking
from newsletter.campaigns.files import as_utc
from newsletter.campaigns.frozen import ALL_WAVES, FrozenCampaign, FrozenEmail, FrozenReward
from newsletter.campaigns.messages import campaign_headers
from newsletter.campaigns.report import reason_key, with_reasons
from newsletter.campaigns.site import retired_from_db, site_context, topics_from_db, translations_from_db
from newsletter.campaigns.validation import validate_campaign
from newsletter.core import clock
from newsletter.core.config import Settings, insecure_base_url, is_loopback
from newsletter.mail import branding
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState, Wave, WaveStatus


class ScheduleError(Exception):
    """The campaign cannot be (re)scheduled; the message says why, one line per problem."""


def content_hash(folder: Path) -> str:
    """SHA-256 over every file of the folder (names and bytes), in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of each file of the folder by relative path: what ``schedule`` names after an edit."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(p for p in folder.rglob("*") if p.is_file())
    }


def describe_change(before: dict[str, str] | None, after: dict[str, str]) -> str:
    """``email.mjml changed, notes.md added`` (or a plain "the files changed" without a record)."""
    if not before:
        return "the files changed"
    both = sorted(before.keys() & after.keys())
    parts = [f"{name} changed" for name in both if before[name] != after[name]]
    parts += [f"{name} added" for name in sorted(after.keys() - before.keys())]
    parts += [f"{name} removed" for name in sorted(before.keys() - after.keys())]
    return ", ".join(parts) or "the files changed"


def find(session: Session, slug: str) -> Campaign | None:
    return session.scalar(select(Campaign).where(Campaign.slug == slug))


def schedule(session: Session, settings: Settings, folder: Path, *, reschedule: bool = False) -> Campaign:
    """Validate, render every wave once, and freeze the result with the files' content hash."""
    insecure = insecure_base_url(settings)
    if insecure and not is_loopback(settings.base_url):
        # every email's List-Unsubscribe is built from BASE_URL: refuse before anything is frozen
        raise ScheduleError(f"{insecure}; set NEWSLETTER_BASE_URL to an https:// address (http: loopback)")
    now = clock.now()
    site = site_context(
        settings, topics_from_db(session), retired_from_db(session), translations_from_db(session)
    )
    report = validate_campaign(folder, site, now)
    if not report.ok or report.campaign is None:
        raise ScheduleError("\n".join(str(p) for p in report.errors) or f"{folder}: not a campaign")
    source = report.campaign
    digest = content_hash(folder)
    existing = find(session, source.slug)
    why = "scheduled"
    if existing is not None:
        if existing.content_hash == digest and existing.status != CampaignStatus.CANCELLED:
            return existing  # scheduling the same files twice changes nothing
        if not reschedule and existing.content_hash == digest:  # the same files, cancelled
            raise ScheduleError(
                f"{source.slug} is cancelled; use --reschedule to schedule it again (only if no wave started)"
            )
        change = describe_change(FrozenCampaign.of(existing).files, file_hashes(folder))
        if not reschedule:
            raise ScheduleError(
                f"{source.slug}: {change} since it was scheduled "
                f"(content {existing.content_hash[:12]}, now {digest[:12]}); "
                "use --reschedule to freeze the new version"
            )
        if any(w.status != WaveStatus.WAITING for w in existing.waves):
            raise ScheduleError(
                f"{source.slug}: a wave has started; cancel it and schedule a new slug instead"
            )
        why = f"rescheduled: {change}" if existing.content_hash != digest else "rescheduled after a cancel"
        session.delete(existing)
        session.flush()

    sender = branding.sender(source.sender or settings.from_, settings.store_name)
    by_language = {None: report.emails, **report.variants}
    emails = {
        (language, name or ALL_WAVES): FrozenEmail(
            subject=email.subject,
            html=email.html,
            text=email.text,
            slots=email.slots,
            headers=campaign_headers(source, site, name),
        )
        for language, rendered in by_language.items()
        for name, email in rendered.items()
    }
    links: tuple[str, ...] = ()
    if source.track_clicks or source.track_opens:
        emails, links = tracking.apply(emails, clicks=source.track_clicks, opens=source.track_opens)
    variants: dict[str, dict[str, FrozenEmail]] = {}
    for (language, name), email in emails.items():
        if language is not None:
            variants.setdefault(language, {})[name] = email
    frozen = FrozenCampaign(
        sender=sender,
        envelope_from=parseaddr(sender)[1],
        files=file_hashes(folder),
        waves={name: email for (language, name), email in emails.items() if language is None},
        language=source.language,
        variants=variants,
        track_clicks=source.track_clicks,
        track_opens=source.track_opens,
        links=links,
        reward=FrozenReward(
            pool=source.reward.pool,
            prefix=source.reward.prefix or "",
            expires_in_days=source.reward.expires_in_days or 0,
        )
        if source.reward
        else None,
    )
    sale = source.sale
    deadline = as_utc(sale.public_at) if sale else (as_utc(source.deliver_by) if source.deliver_by else None)
    campaign = Campaign(
        slug=source.slug,
        name=source.name,
        topic_slug=source.topic,
        status=CampaignStatus.SCHEDULED,
        content_hash=digest,
        compiled=frozen.to_json(),
        deadline=deadline,
        sale_url=sale.url if sale else None,
        public_at=as_utc(sale.public_at) if sale else None,
        ends_at=as_utc(sale.ends_at) if sale else None,
        scheduled_at=now,
    )
    campaign.waves = [
        Wave(
            position=i, name=w.name, audience=w.audience, send_at=as_utc(w.send_at), status=WaveStatus.WAITING
        )
        for i, w in enumerate(source.waves)
    ]
    session.add(campaign)
    session.flush()
    state.record(session, campaign, None, CampaignStatus.SCHEDULED, reason=why, actor="operator")
    return campaign


@dataclass
class Control:
    ok: bool
    message: str


def pause(
    session: Session, campaign: Campaign, reason: str = "paused by an operator", actor: str = "operator"
) -> Control:
    try:
        state.transition(
            session, campaign, CampaignStatus.PAUSED, reason=reason, actor=actor, pause_reason=reason
        )
    except state.IllegalTransition as exc:
        return Control(False, f"{campaign.slug} is {exc.current.value}; nothing to pause")
    return Control(True, f"{campaign.slug} paused: workers stop at their next message")


def resume(session: Session, campaign: Campaign, actor: str = "operator") -> Control:
    """Carry on from the delivery ledger: after a pause, or after Redis lost the queue.

    Nothing is resent: rows already sent stay sent; the next tick enqueues the ready rows
    again and the cap counters are rebuilt from the ledger if Redis lost them.
    """
    if campaign.status == CampaignStatus.SENDING:
        return Control(True, f"{campaign.slug} is sending: its work is rebuilt from the delivery ledger")
    started = any(w.status != WaveStatus.WAITING for w in campaign.waves)
    try:
        state.transition(
            session,
            campaign,
            CampaignStatus.SENDING if started else CampaignStatus.SCHEDULED,
            reason="resumed by an operator",
            actor=actor,
            only_from=(CampaignStatus.PAUSED,),
            pause_reason=None,
            error_streak=0,
        )
    except state.IllegalTransition as exc:
        return Control(False, f"{campaign.slug} is {exc.current.value}; only a paused campaign resumes")
    return Control(True, f"{campaign.slug} resumed: the work is rebuilt from the delivery ledger")


def cancel(session: Session, campaign: Campaign, actor: str = "operator") -> Control:
    try:
        state.transition(
            session, campaign, CampaignStatus.CANCELLED, reason="cancelled by an operator", actor=actor
        )
    except state.IllegalTransition as exc:
        return Control(False, f"{campaign.slug} is already {exc.current.value}")
    session.execute(
        Delivery.__table__.update()
        .where(
            Delivery.campaign_id == campaign.id,
            Delivery.state.in_([DeliveryState.QUEUED, DeliveryState.DEFERRED]),
        )
        .values(state=DeliveryState.SKIPPED, reason="campaign cancelled")
    )
    return Control(True, f"{campaign.slug} cancelled: nothing more will be sent")


def send_now(session: Session, campaign: Campaign, now: datetime) -> Control:
    """Bring the next waiting wave's start to now."""
    waiting = [w for w in campaign.waves if w.status == WaveStatus.WAITING]
    if not waiting or campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.SENDING):
        return Control(False, f"{campaign.slug}: no waiting wave to start ({campaign.status.value})")
    waiting[0].send_at = now.replace(microsecond=0)  # whole seconds: what status shows
    return Control(True, f"{campaign.slug}: wave {waiting[0].name!r} starts at the next tick")


#: the states a row ends in: a wave's progress is the share of its rows in one of them
DONE_STATES = ("sent", "skipped", "failed", "uncertain")


def wave_progress(wave: dict) -> tuple[int, int]:
    """(rows done, rows in all) of one wave of :func:`progress`."""
    states = wave["states"]
    return sum(n for s, n in states.items() if s in DONE_STATES), sum(states.values())


def progress(session: Session, campaign: Campaign) -> dict:
    """Counts per state per wave, the reasons of skips, deferrals and failures, and redemptions."""
    names = {w.id: w.name for w in campaign.waves}
    waves = {
        w.name: {
            "status": w.status.value,
            "send_at": w.send_at.isoformat() + "Z",
            "states": {},
            "reasons": {},
            "redemptions": 0,
        }
        for w in campaign.waves
    }
    for row in tallies.groups(session, campaign.id):  # the same tallies as `campaign report`
        wave = waves[names[row.wave_id]]
        row_state = getattr(row.state, "value", row.state)
        wave["states"][row_state] = wave["states"].get(row_state, 0) + row.n
        wave["redemptions"] += row.redeemed
        if row.reason and with_reasons(row_state):
            key = f"{row_state}: {reason_key(row.reason)}"
            wave["reasons"][key] = wave["reasons"].get(key, 0) + row.n
    return {
        "campaign": campaign.slug,
        "status": campaign.status.value,
        "pause_reason": campaign.pause_reason,
        "waves": waves,
    }
