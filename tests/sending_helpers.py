"""Helpers for the sending tests: campaign folders, the engine's tick, fault-injecting SMTP."""

from __future__ import annotations

import random
import shutil
import threading
from collections import Counter
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import select

from newsletter.core import clock
from newsletter.models import Customer, Delivery
from newsletter.models.subscribers import address_hash

ROOT = Path(__file__).resolve().parent.parent
SALE_EXAMPLE = ROOT / "campaigns" / "spring-sale"
NEWSLETTER_EXAMPLE = ROOT / "campaigns" / "monthly-newsletter"


def toml_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_campaign(
    folder: Path,
    *,
    waves: list[tuple[str, str, datetime]],
    public_at: datetime | None = None,
    ends_at: datetime | None = None,
    deliver_by: datetime | None = None,
    topic: str = "early-access",
    slug: str = "test-sale",
    variants: bool = False,
) -> Path:
    """A campaign folder with an example's email (the sale's when there is a sale), our waves and dates;
    ``variants``: its language variants' files too (email.de.mjml: the subject is the test's to add)."""
    target = folder / slug
    target.mkdir(parents=True)
    example = SALE_EXAMPLE if public_at else NEWSLETTER_EXAMPLE
    for item in example.iterdir():
        if item.name != "campaign.toml" and (variants or item.name.count(".") < 2):
            (shutil.copytree if item.is_dir() else shutil.copy)(item, target / item.name)
    lines = [
        f'name = "Test sale {slug}"',
        'subject = "Early access, {{ subscriber.first_name }}"',
        'preheader = "Before everyone else"',
        f'topic = "{topic}"',
    ]
    if deliver_by:
        lines.append(f"deliver_by = {toml_time(deliver_by)}")
    if public_at:
        lines += [
            "",
            "[sale]",
            'url = "https://shop.example/spring"',
            f"public_at = {toml_time(public_at)}",
            f"ends_at = {toml_time(ends_at or public_at + timedelta(days=3))}",
        ]
    for name, audience, send_at in waves:
        lines += [
            "",
            "[[wave]]",
            f'name = "{name}"',
            f"audience = '{audience}'",
            f"send_at = {toml_time(send_at)}",
        ]
    (target / "campaign.toml").write_text("\n".join(lines) + "\n", "utf-8")
    return target


def add_customer(session, email: str, **values) -> None:
    session.add(Customer(email_hash=address_hash(email), **values))
    session.commit()


def run_engine(runtime, work, rounds: int = 3) -> None:
    """What workers do: tick, then drain the queues; a few rounds for deferred retries."""
    from newsletter.campaigns.jobs import tick

    for _ in range(rounds):
        tick()
        work()


def rows(runtime, campaign_slug: str | None = None) -> list[Delivery]:
    from newsletter.models import Campaign

    with runtime.sessions() as session:
        query = select(Delivery).order_by(Delivery.id)
        if campaign_slug:
            query = query.join(Campaign).where(Campaign.slug == campaign_slug)
        result = list(session.scalars(query))
        session.expunge_all()
        return result


def recipients(messages) -> Counter:
    return Counter(str(m["To"]) for m in messages)


def now_floor() -> datetime:
    """The next full minute of the test clock: the earliest "now" a campaign may be scheduled for
    (a wave in the past is an error); ``schedule`` in the tests moves the clock there."""
    return clock.now().replace(second=0, microsecond=0) + timedelta(minutes=1)


# --- an SMTP server that misbehaves on purpose ------------------------------------------------


class FaultyHandler:
    """Answers 451/421 at random, 550 for chosen mailboxes; records what it accepted."""

    def __init__(self, seed: int = 7, temporary_rate: float = 0.0, refuse: set[str] | None = None):
        self.random = random.Random(seed)
        self.temporary_rate = temporary_rate
        self.refuse = refuse or set()
        self.accepted: list[tuple[str, bytes]] = []
        self.faults = Counter()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            self.faults["550"] += 1
            return "550 5.1.1 no such mailbox"
        with self.lock:
            roll = self.random.random()
        if roll < self.temporary_rate / 2:
            self.faults["451"] += 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            roll = self.random.random()
        if roll < self.temporary_rate / 2:
            self.faults["421"] += 1
            return "421 4.7.0 too busy, closing"
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.accepted.append((rcpt, envelope.original_content))
        return "250 OK"

    def counts(self) -> Counter:
        with self.lock:
            return Counter(rcpt for rcpt, _ in self.accepted)

    def messages(self):
        with self.lock:
            return [message_from_bytes(raw, policy=policy.default) for _, raw in self.accepted]


def start_faulty_smtp(port: int, handler: FaultyHandler) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller
