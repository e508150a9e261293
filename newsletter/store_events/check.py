"""Store mail stays transactional: each kind's files render with a sample event and carry no marketing."""

from __future__ import annotations

import re

from jinja2 import TemplateError, TemplateSyntaxError

from newsletter.core.config import Settings
from newsletter.models import OutboxKind, StoreEvent
from newsletter.models.outbox import STORE_KINDS

#: what marks marketing in an email: early-access links, sale wording, discount offers
MARKETING = re.compile(
    r"/early-access/|\bearly[ -]access\b|\bsale\b|\d+ ?% off\b|\bpromo(tion)? code\b", re.I
)

SAMPLE = {
    "event_id": "sample",
    "email": "customer@example.com",
    "first_name": "Ann",
    "order_id": "1001",
    "order_url": "https://shop.example/orders/1001",
    "tracking_url": "https://carrier.example/1001",
    "new_date": "2026-12-24",
    "reason": "the supplier is late",
    "item": "Blue teapot",
    "url": "https://shop.example/blue-teapot",
    "alternatives": [{"name": "Green teapot", "url": "https://shop.example/green-teapot"}],
}


#: the thank-you is checked with its one-time newsletter invitation, which must not sell either
INVITE = {OutboxKind.ORDER_PLACED: "https://news.example/join/sample"}


def problems(settings: Settings) -> list[str]:
    """``templates/email/<kind>.<ext>[:line]: reason`` for every store mail file that is not fit to send."""
    from newsletter.subscribers.transactional import build_store_mail

    found = []
    for kind in sorted(STORE_KINDS):
        event = StoreEvent(kind=kind.value, email=SAMPLE["email"], payload={**SAMPLE, "kind": kind.value})
        try:
            message = build_store_mail(settings, OutboxKind(kind), event, invite_url=INVITE.get(kind))
        except TemplateSyntaxError as exc:
            found.append(f"templates/email/{exc.name}:{exc.lineno}: {exc.message}")
            continue
        except (TemplateError, ValueError) as exc:
            found.append(f"templates/email/{kind.value}: {exc}")
            continue
        for part, ext in ((("plain",), "txt"), (("html",), "mjml")):
            text = message["Subject"] + "\n" + message.get_body(part).get_content()
            for match in MARKETING.finditer(text):
                found.append(
                    f"templates/email/{kind.value}.{ext}: marketing in store mail: {match.group(0)!r}"
                )
    return found
