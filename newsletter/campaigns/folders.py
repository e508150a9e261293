"""The campaign folders on disk as the dashboard shows them: each one's validation (the very
``validate_folder`` of ``newsletter campaign validate``), whether it is scheduled, and whether its
files changed since; and the HTML a preview shows (the message ``campaign preview`` writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from newsletter.campaigns.frozen import FrozenCampaign
from newsletter.campaigns.preview import campaign_message
from newsletter.campaigns.scheduling import content_hash, describe_change, file_hashes
from newsletter.campaigns.site import SiteContext
from newsletter.campaigns.validation import (
    ValidationReport,
    fill,
    find_campaigns,
    sample_values,
    unchanged_until,
    validate_folder,
)
from newsletter.core import clock
from newsletter.mail.message import preview_files
from newsletter.models import Campaign

#: reports by folder, content and site, with the moments they hold from and until: the list's reloads and
#: a folder page with its two frames validate (and render) a folder once; an edit validates afresh
_VALIDATED: dict[tuple, tuple[datetime, datetime, ValidationReport]] = {}
_VALIDATED_MAX = 256
#: the sample subscriber's address, as ``campaign preview`` renders without --subscriber
SAMPLE_TO = "alex@example.com"


@dataclass
class FolderState:
    """One campaign folder: its validation, its scheduled campaign (if any) and what changed since."""

    folder: Path
    report: ValidationReport
    campaign: Campaign | None = None
    #: ``email.mjml changed`` when the files differ from those scheduled; None when they do not
    changed: str | None = None

    @property
    def name(self) -> str:
        return self.folder.name


def find_folder(root: Path, name: str) -> Path | None:
    """The campaign folder ``name`` directly under ``root``, or None: only a name the listing shows,
    so no path from a URL ever reaches the disk (``..``, ``a/b``, absolute paths are None)."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        return None
    return next((folder for folder in find_campaigns(root) if folder.name == name), None)


def validated(folder: Path, site: SiteContext, now: datetime) -> tuple[ValidationReport, str | None]:
    """``validate_folder``'s report, reused while the files and the site are the same and no time of
    the campaign has passed since; and the files' ``content_hash`` (None if they cannot be read)."""
    try:
        digest = content_hash(folder)
    except OSError:
        return validate_folder(folder, site, now), None
    key = (str(folder.resolve()), digest, repr(site))
    held = _VALIDATED.get(key)
    if held is not None and held[0] <= now < held[1]:
        return held[2], digest
    if len(_VALIDATED) >= _VALIDATED_MAX:
        _VALIDATED.clear()
    report = validate_folder(folder, site, now)
    _VALIDATED[key] = (now, unchanged_until(report, now), report)
    return report, digest


def folder_state(session: Session, site: SiteContext, folder: Path) -> FolderState:
    """Validate ``folder`` and compare it with the campaign scheduled from it."""
    report, digest = validated(folder, site, clock.now())
    slug = report.campaign.slug if report.campaign else folder.resolve().name
    scheduled = session.scalar(select(Campaign).where(Campaign.slug == slug))
    state = FolderState(folder, report, scheduled)
    if scheduled is not None:
        if digest is None:
            state.changed = "its files cannot be read"
        elif digest != scheduled.content_hash:
            try:
                state.changed = describe_change(FrozenCampaign.of(scheduled).files, file_hashes(folder))
            except OSError:  # removed or unreadable in between: say so rather than guess
                state.changed = "its files cannot be read"
    return state


def folder_states(session: Session, site: SiteContext, root: Path) -> list[FolderState]:
    """Every campaign folder under ``root``, by name (``find_campaigns``, as the command finds them)."""
    return [folder_state(session, site, folder) for folder in find_campaigns(root)]


def preview_html(
    report: ValidationReport, site: SiteContext, wave: str | None, language: str | None = None
) -> str | None:
    """The HTML part of ``wave``'s message (in ``language``'s variant; None: the default email) for the
    sample subscriber, built as ``campaign preview`` builds it (skeleton, then personalise); None when
    the folder rendered no such email."""
    emails = report.emails_in(language)
    if report.campaign is None or wave not in emails:
        return None
    data = campaign_message(report, site, wave, emails[wave], SAMPLE_TO, sample_values(site))
    return preview_files(data)[".html"].decode("utf-8")


def preview_subject(
    report: ValidationReport, site: SiteContext, wave: str | None, language: str | None = None
) -> str:
    """``wave``'s subject line (in ``language``'s variant) as the sample subscriber reads it."""
    email = report.emails_in(language).get(wave)
    return fill(email.subject, sample_values(site)) if email else ""
