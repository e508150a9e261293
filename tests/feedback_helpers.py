"""Helpers for the bounce tests: sample reports filled in with our message, a sent campaign, waiting."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import select

from newsletter.campaigns import scheduling
from newsletter.campaigns.jobs import tick
from newsletter.core import clock
from newsletter.mail import verp
from newsletter.mail.verp import VerpRef
from newsletter.models import Delivery, SuppressionReason
from newsletter.subscribers import suppression
from tests.sending_helpers import now_floor, run_engine, write_campaign

SAMPLES = Path(__file__).parent / "data" / "feedback"


def sample(name: str, *, verp_address: str, recipient: str, message_id: str, fbl: str = "") -> bytes:
    """A sample report with our message's VERP address, recipient and Message-ID filled in."""
    text = (SAMPLES / name).read_text("utf-8")
    date = format_datetime(clock.now().replace(tzinfo=None) - timedelta(minutes=1))
    for key, value in {
        "VERP": verp_address,
        "RECIPIENT": recipient,
        "MESSAGE_ID": message_id,
        "FBL": fbl or "bounces@store.example",
        "DATE": date,
    }.items():
        text = text.replace("{{" + key + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


@dataclass(frozen=True)
class Sent:
    """One delivery of the campaign: its envelope sender (VERP), the tag's reference, its Message-ID."""

    address: str
    verp_address: str
    ref: VerpRef
    message_id: str

    def report(self, name: str, **overrides) -> bytes:
        values = {
            "verp_address": self.verp_address,
            "recipient": self.address,
            "message_id": self.message_id,
            **overrides,
        }
        return sample(name, **values)


def send_campaign(
    runtime,
    make_subscriber,
    smtp_sink,
    work,
    tmp_path,
    addresses,
    reward: str | None = None,
    suppress_after_freeze: tuple[str, ...] = (),
    **folder_args,
) -> dict[str, Sent]:
    """A campaign sent to ADDRESSES through the smtp_sink; what each delivery is known by.

    REWARD is the body of a ``[reward]`` table; FOLDER_ARGS go to ``write_campaign`` (waves, a sale).
    SUPPRESS_AFTER_FREEZE are suppressed once the wave's audience is in the ledger, before the
    batches run: the engine skips them (reason "suppressed").
    """
    for address in addresses:
        make_subscriber(address, topics=("early-access",))
    folder_args.setdefault("waves", [("all", "all", now_floor() - timedelta(minutes=1))])
    folder = write_campaign(tmp_path, **folder_args)
    if reward:
        with open(folder / "campaign.toml", "a", encoding="utf-8") as handle:
            handle.write("\n[reward]\n" + reward + "\n")
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    if suppress_after_freeze:
        tick()  # the audience frozen into the ledger, the batches queued
        with runtime.sessions() as session:
            for address in suppress_after_freeze:
                suppression.suppress(session, suppression.hash_for(address), SuppressionReason.MANUAL, "test")
            session.commit()
    run_engine(runtime, work)
    envelopes = smtp_sink.take_envelopes()
    assert len(envelopes) == len(addresses) - len(suppress_after_freeze)
    sent = {}
    with runtime.sessions() as session:
        for sender, rcpts, _message in envelopes:
            ref = verp.read(runtime.settings, sender)
            message_id = session.scalar(select(Delivery.message_id).where(Delivery.id == ref.row_id))
            sent[rcpts[0]] = Sent(rcpts[0], sender, ref, message_id)
    return sent


def wait_for(condition, timeout: float = 30.0, what: str = "the condition"):
    """Poll CONDITION until it returns something truthy (returned), or fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
