"""``newsletter campaign new SLUG``: a commented starting folder that validates as written."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

from newsletter.campaigns.files import CAMPAIGN_FILE, MJML_FILE, TEXT_FILE

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")

TOML = """\
# A campaign: this file, email.mjml (the HTML email) and email.txt (its plain-text part).
# Check it with: newsletter campaign validate {folder}
# Every key is described in docs/campaigns.md.
name = "{slug}"  # shown in 'campaign list' and reports, not to readers
subject = "News from {{{{ store.name }}}}"  # Jinja: {{{{ subscriber.first_name or "there" }}}} works too
preheader = "The line inboxes show after the subject."
topic = "{topic}"  # who receives it: subscribers of this topic
send_at = {send_at}  # when to send (with a UTC offset); or several [[wave]] tables

# Optional: the email's background colour and width (320 to 800 pixels).
# [email]
# background = "#f4f4f4"
# width = 600

# Optional: a German variant for subscribers whose language is German (email.de.mjml beside
# email.mjml, and email.de.txt if you like); see "Languages" in campaigns/README.md.
# [variant.de]
# subject = "Neues von {{{{ store.name }}}}"
# preheader = "Die Zeile, die Posteingänge nach dem Betreff zeigen."
"""

MJML = """\
{#- The HTML email, in MJML (https://documentation.mjml.io) with Jinja. base.mjml gives the
    header and the legal footer (unsubscribe link, postal address): keep extending it. -#}
{% extends "base.mjml" %}
{% block content %}
<mj-section background-color="#ffffff" padding="0 24px">
  <mj-column>
    <mj-text>Hello {{ subscriber.first_name or "there" }},</mj-text>
    <mj-text>Write your news here.</mj-text>
    <mj-button href="{{ store.url }}">Visit {{ store.name }}</mj-button>
  </mj-column>
</mj-section>
{% endblock %}
"""

TEXT = """\
{#- The plain-text part; it must keep the unsubscribe link and the postal address. -#}
Hello {{ subscriber.first_name or "there" }},

Write your news here.

{{ store.name }}: {{ store.url }}

Unsubscribe: {{ links.unsubscribe }}
Email preferences: {{ links.preferences }}
{{ store.name }}, {{ store.postal_address }}
"""


class StarterError(ValueError):
    """The folder cannot be written (bad slug, already there); the message is one line."""


def write_starter(root: Path, slug: str, topic: str, now: datetime) -> Path:
    """Write ``root/slug`` with the three files; ``now`` (naive UTC) sets send_at a week later."""
    if not SLUG.fullmatch(slug):
        raise StarterError(f"{slug!r} is not a campaign slug: use a-z, 0-9 and - (it names the folder)")
    folder = root / slug
    if folder.exists():
        raise StarterError(f"{folder} already exists; choose another slug")
    send_at = (now + timedelta(days=7)).replace(hour=10, minute=0, second=0, microsecond=0)
    root.mkdir(parents=True, exist_ok=True)
    folder.mkdir()
    values = {"slug": slug, "topic": topic, "folder": folder, "send_at": f"{send_at.isoformat()}+00:00"}
    (folder / CAMPAIGN_FILE).write_text(TOML.format(**values), "utf-8")
    (folder / MJML_FILE).write_text(MJML, "utf-8")
    (folder / TEXT_FILE).write_text(TEXT, "utf-8")
    return folder
