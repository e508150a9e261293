"""One batch: claim its rows, decide caps, send in id order, and record each message in the ledger.

A slice's rows are ``claimed`` while it decides caps and ``sending`` once those decisions are
committed. Before each SMTP transaction its row is re-checked and named in the slice's progress
note (Redis); the relay's 250s are marked ``sent`` in groups of ``SEND_MARK_EVERY``. So a dead
worker leaves at most one row of its claim whose fate is unknown, the one the note names (the
rows below it were accepted, the rows above it never started), and none if it died deciding;
if Redis lost the note too, at most ``SEND_MARK_EVERY`` + 1 (recovery.py).
One recipient whose message cannot be built or handed over fails alone; the slice goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from newsletter.campaigns import caps, errors, rewards, state, tracking
from newsletter.campaigns.decisions import decide, start_sending
from newsletter.campaigns.frozen import FrozenCampaign, FrozenEmail
from newsletter.campaigns.ledger import (
    BatchReport,
    Ledger,
    Recipient,
    claim,
    heartbeat_key,
    load_recipients,
    mark,
    message_id_for,
    release,
)
from newsletter.campaigns.rate import RateLimiter
from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.mail import verp
from newsletter.mail.skeleton import Skeleton, build_skeleton, personalise
from newsletter.mail.transports import TransportError
from newsletter.models import Campaign, DeliveryState
from newsletter.subscribers import links

HEARTBEAT_SECONDS = 5


def skeletons_for(campaign: Campaign, frozen: FrozenCampaign | None = None) -> dict[int, Skeleton]:
    """The frozen (default) email of each wave, encoded once for the whole batch."""
    frozen = frozen or FrozenCampaign.of(campaign)
    return {wave.id: _skeleton(frozen, frozen.email_for(wave.name)) for wave in campaign.waves}


def _skeleton(frozen: FrozenCampaign, email: FrozenEmail) -> Skeleton:
    return build_skeleton(
        sender=frozen.sender,
        subject=email.subject,
        text=email.text,
        html=email.html,
        slots=dict(email.slots),
        headers=dict(email.headers),
    )


class Skeletons:
    """A batch's skeletons by wave and language: each encoded once, when its first recipient comes."""

    def __init__(self, campaign: Campaign, frozen: FrozenCampaign, default_language: str):
        self.frozen, self.default_language = frozen, default_language
        self._waves = {wave.id: wave.name for wave in campaign.waves}
        self._languages: dict[str | None, str] = {}
        self._built: dict[tuple[int, str], Skeleton] = {}

    def language_for(self, recipient: Recipient) -> str:
        """The variant ``recipient`` gets (frozen.language_for, remembered per stored language)."""
        found = self._languages.get(recipient.language)
        if found is None:
            found = self._languages[recipient.language] = self.frozen.language_for(
                recipient.language, self.default_language
            )
        return found

    def get(self, wave_id: int, language: str) -> Skeleton:
        key = (wave_id, language)
        found = self._built.get(key)
        if found is None:
            email = self.frozen.email_for(self._waves[wave_id], language)
            found = self._built[key] = _skeleton(self.frozen, email)
        return found


def personal_values(
    settings: Settings,
    campaign: Campaign,
    recipient: Recipient,
    *,
    tracked: bool = False,
    reward_code: str | None = None,
) -> dict[str, str]:
    """One recipient's values; ``tracked``: the campaign tracks clicks or opens (one token per message);
    ``reward_code``: the code assigned to this delivery ([reward])."""
    who = _Who(recipient.subscriber_id, recipient.email_hash)
    values = {
        "first_name": recipient.first_name or "",
        "email": recipient.email,
        # the campaign in the link: an unsubscribe through it counts against this campaign
        "unsubscribe_url": links.unsubscribe_url(
            settings, who, topic=campaign.topic_slug, campaign_id=campaign.id
        ),
        "preferences_url": links.preferences_url(settings, who),
    }
    if campaign.sale_url:
        values["early_access_url"] = links.early_access_url(settings, who, campaign.id)
    if tracked:
        values.update(tracking.personal_urls(settings, campaign.id, recipient.delivery_id))
    if reward_code is not None:
        values["reward_code"] = reward_code
        expires = rewards.expiry_of(reward_code)
        values["reward_expires"] = f"{expires.day} {expires:%B %Y}" if expires else ""
    return values


@dataclass(frozen=True)
class _Who:
    """What links need of a subscriber, without loading the ORM object."""

    id: int
    email_hash: str


def send_batch(
    session: Session,
    conn: redis.Redis,
    settings: Settings,
    transport,
    campaign_id: int,
    first_id: int,
    last_id: int,
    commit: Callable[[], None],
) -> BatchReport:
    """Claim, decide caps, send in id order, record; ``commit`` makes each step durable."""
    report = BatchReport()
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.status not in state.ACTIVE_CAMPAIGN:
        report.stopped = "campaign not sending"
        return report
    now = clock.now()
    token = claim(session, campaign_id, first_id, last_id, now)
    commit()
    if token is None:
        return report
    heartbeat = heartbeat_key(token)
    # Beat well within the stale limit, or a live batch would be taken for dead.
    beat_every = min(HEARTBEAT_SECONDS, settings.stale_claim_seconds / 3)
    conn.set(heartbeat, 1, ex=settings.stale_claim_seconds)
    last_beat = time.monotonic()

    recipients = load_recipients(session, campaign, token)
    to_send = decide(session, conn, settings, campaign, recipients, token, now, report)
    frozen = FrozenCampaign.of(campaign)
    codes: dict[int, str] = {}
    if frozen.reward and to_send:
        # in the transaction that decides the batch, before any message: a retry finds the same codes
        codes, without = rewards.assign(session, settings, frozen.reward, to_send, now)
        if without:
            # nobody gets this email without their code: those rows wait, the campaign pauses
            release(session, conn, without, DeliveryState.QUEUED)
            state.pause_itself(
                session,
                campaign,
                f"reward pool {frozen.reward.pool} ran dry: {len(without)} recipients without a code "
                "(import more with newsletter codes import, then resume)",
                actor="rewards",
            )
            to_send = [r for r in to_send if r.delivery_id in codes]
    if not start_sending(session, token, to_send):
        # Taken for dead while deciding (a stall past the stale limit): the rows, and any cap
        # places taken for them since, belong to their next owner; this batch writes nothing.
        session.rollback()
        report.stopped = "claim lost"
        return report
    commit()

    skeletons = Skeletons(campaign, frozen, settings.default_language)
    tracked = frozen.track_clicks or frozen.track_opens
    limiter = RateLimiter(conn, settings.send_rate)
    ledger = Ledger(session, conn, campaign.topic_slug, token, settings.send_mark_every)
    errors_since_success = 0
    try:
        for index, recipient in enumerate(to_send):
            if time.monotonic() - last_beat > beat_every:
                conn.set(heartbeat, 1, ex=settings.stale_claim_seconds)
                last_beat = time.monotonic()
                session.refresh(campaign, ["status"])
                commit()
                if campaign.status not in state.ACTIVE_CAMPAIGN:
                    release(session, conn, to_send[index:], DeliveryState.QUEUED)
                    commit()
                    report.stopped = f"campaign {campaign.status.value}"
                    break
            why_not = ledger.still_wanted(recipient)
            if why_not == "claim lost":
                # The sweep took this batch back after a stall and gave back its cap places; the
                # rows (and any places taken for them since) belong to whoever claimed them next.
                report.stopped = "claim lost"
                break
            if why_not:
                caps.release(conn, recipient.subscriber_id, caps.member_for(recipient.delivery_id))
                mark(session, [recipient.delivery_id], state=DeliveryState.SKIPPED, reason=why_not)
                commit()
                report.skipped += 1
                continue
            limiter.take()
            recipient.variant = skeletons.language_for(recipient)
            skeleton = skeletons.get(recipient.wave_id, recipient.variant)
            message_id = message_id_for(token, recipient.delivery_id, skeleton.sender_domain)
            stop = None
            try:
                values = personal_values(
                    settings,
                    campaign,
                    recipient,
                    tracked=tracked,
                    reward_code=codes.get(recipient.delivery_id),
                )
                data = personalise(skeleton, recipient.email, values, message_id=message_id)
            except Exception as exc:  # noqa: BLE001 - one person's data must not stop the slice
                stop = errors.on_bad_message(
                    session,
                    conn,
                    settings,
                    campaign,
                    recipient,
                    f"could not build the message: {exc}",
                    report,
                )
            if stop is None:
                try:
                    envelope = verp.return_path(settings, verp.DELIVERY, recipient.delivery_id)
                    ledger.starting(message_id)
                    transport.send_raw(envelope or frozen.envelope_from, [recipient.email], data)
                except TransportError as exc:
                    stop = errors.on_error(session, conn, settings, campaign, recipient, exc, report)
                except Exception as exc:  # noqa: BLE001 - e.g. an address the relay's encoding refuses
                    transport.close()  # the SMTP dialogue is in an unknown state: start the next afresh
                    reason = f"could not hand the message over: {type(exc).__name__}: {exc}"
                    stop = errors.on_bad_message(session, conn, settings, campaign, recipient, reason, report)
            if stop is not None:
                errors_since_success += 1
                commit()
                if stop:
                    release(session, conn, to_send[index + 1 :], DeliveryState.QUEUED)
                    commit()
                    break
                continue
            # marked with its group; until then the progress note says the relay has it
            ledger.mark_sent(recipient, message_id)
            if errors_since_success:
                ledger.reset_error_streak(campaign.id)
                errors_since_success = 0
            report.sent += 1
    finally:
        ledger.close()
    ledger.finished()
    conn.delete(heartbeat)
    state.finish_if_done(session, campaign)
    commit()
    return report
