"""Shared by the campaign tests: a fixed site and clock, and campaign folders written on the fly."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

from newsletter.campaigns.site import SiteContext

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "campaigns"
#: a fixed "now" so that validation and snapshots do not depend on the day the tests run
NOW = datetime(2026, 11, 23, 12, 0)
SITE = SiteContext(
    store_name="Our store",
    postal_address="1 Example Street, Example City",
    base_url="https://newsletter.test",
    sender="Store <news@store.example>",
    list_id="store.example",
    topics={"newsletter": "Newsletter", "early-access": "Early access", "product-news": "Product news"},
)

TOML = """\
name = "Test campaign"
subject = "Hello {{ subscriber.first_name }}"
preheader = "A preheader"
topic = "newsletter"
send_at = 2030-01-07T10:00:00+01:00
"""

MJML = """\
{% extends "base.mjml" %}
{% block content %}
<mj-section>
  <mj-column>
    <mj-text>Hello {{ subscriber.first_name }}</mj-text>
  </mj-column>
</mj-section>
{% endblock %}
"""


def write_campaign(
    root: Path, toml: str = TOML, mjml: str = MJML, text: str | None = None, slug: str = "c"
) -> Path:
    """A campaign folder under ``root`` with the given files (dedented)."""
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "campaign.toml").write_text(textwrap.dedent(toml), "utf-8")
    (folder / "email.mjml").write_text(textwrap.dedent(mjml), "utf-8")
    if text is not None:
        (folder / "email.txt").write_text(textwrap.dedent(text), "utf-8")
    return folder
