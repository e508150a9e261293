"""Automatic protection: a campaign pauses itself when its complaint or bounce rate is too high."""

from __future__ import annotations

from sqlalchemy.orm import Session

from newsletter.core.config import Settings


def check(session: Session, settings: Settings, campaign_id: int) -> str | None:
    """Pause the campaign if a rate passed its threshold; returns the pause reason, or None."""
    return None  # filled in with the thresholds by the protection work of issue 12
