"""Headers every campaign email carries (RFC 8058, RFC 2919 List-Id, bulk-sender rules)."""

from __future__ import annotations

import re

from newsletter.campaigns.files import CampaignSource
from newsletter.campaigns.site import SiteContext
from newsletter.mail.message import domain_of
from newsletter.mail.skeleton import slot_token


def _label(text: str) -> str:
    """A List-Id phrase: printable ASCII without the characters that need quoting."""
    return re.sub(r"[^A-Za-z0-9 .,&!'-]", "", text).strip() or "list"


def campaign_headers(source: CampaignSource, site: SiteContext, wave_name: str | None) -> dict[str, str]:
    """Headers for one wave's email; values may hold slot tokens (the unsubscribe URL)."""
    sender = source.sender or site.sender
    topic_name = site.topics.get(source.topic, source.topic)
    return {
        # RFC 8058: one HTTPS URI that takes a POST; the page and the POST live at the same URL
        "List-Unsubscribe": f"<{slot_token('unsubscribe_url', 'header')}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        # RFC 2919: one list per topic, so mailbox filters and unsubscribes follow topics
        "List-Id": f"{_label(site.store_name)} {_label(topic_name)} <{source.topic}.{site.list_id}>",
        "Precedence": "bulk",
        "Auto-Submitted": "auto-generated",
        # Gmail's feedback loop groups complaints by these fields: campaign, wave, topic, sender
        "Feedback-ID": f"{source.slug}:{wave_name or 'all'}:{source.topic}:{domain_of(sender)}",
    }
