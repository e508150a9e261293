"""VERP tags: a bounce names its row only through a tag signed with our key."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsletter.campaigns import scheduling
from newsletter.core.config import Settings
from newsletter.mail import verp
from newsletter.mail.branding import from_header
from newsletter.models import Delivery, OutboxEmail
from tests.sending_helpers import now_floor, run_engine, write_campaign

SETTINGS = Settings(secret_key="k" * 32, bounce_address="bounces@store.example")


def test_return_path_names_the_row_and_reads_back():
    address = verp.return_path(SETTINGS, verp.DELIVERY, 123456)
    local, domain = address.split("@")
    assert domain == "store.example" and local.startswith("bounces+d2n9c-")
    assert len(local) <= 64  # RFC 5321 local-part limit, even for huge ids
    assert len(verp.return_path(SETTINGS, verp.OUTBOX, 2**62).split("@")[0]) <= 64
    assert verp.read(SETTINGS, address) == verp.VerpRef("d", 123456)
    assert verp.read(SETTINGS, f"<{address.upper()}>") == verp.VerpRef("d", 123456)  # case folded by an MTA


def test_no_bounce_address_means_no_verp():
    assert verp.return_path(replace(SETTINGS, bounce_address=""), verp.DELIVERY, 1) is None


@pytest.mark.parametrize(
    "forged",
    [
        "bounces+d1-aaaaaaaaaaaaaaaa@store.example",  # a made-up signature
        "bounces+o2n9c-{sig}@store.example",  # another kind with the delivery's signature
        "bounces+d2n9d-{sig}@store.example",  # another id with the same signature
        "bounces@store.example",
        "",
        "bounces+d2n9c@store.example",
    ],
)
def test_a_tag_that_does_not_verify_names_nothing(forged):
    sig = verp.tag(SETTINGS, verp.DELIVERY, 123456).split("-")[1]
    assert verp.read(SETTINGS, forged.format(sig=sig)) is None


def test_old_keys_still_verify_after_a_rotation():
    address = verp.return_path(SETTINGS, verp.DELIVERY, 7)
    rotated = replace(SETTINGS, secret_key="n" * 32, secret_key_fallbacks=("k" * 32,))
    assert verp.read(rotated, address) == verp.VerpRef("d", 7)
    assert verp.read(replace(SETTINGS, secret_key="n" * 32), address) is None


def test_campaign_and_transactional_mail_carry_their_rows_verp_return_path(
    make_app, make_subscriber, signup, smtp_sink, work, tmp_path
):
    app = make_app(BOUNCE_ADDRESS="bounces@store.example", MARKETING_CAPS="", QUIET_HOURS="")
    runtime = app.extensions["newsletter"]
    make_subscriber("ann@example.com", topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    [(sender, rcpts, _message)] = smtp_sink.take_envelopes()
    with runtime.sessions() as session:
        delivery_id = session.scalar(select(Delivery.id))
    assert rcpts == ["ann@example.com"]
    assert verp.read(runtime.settings, sender) == verp.VerpRef(verp.DELIVERY, delivery_id)

    signup("bob@example.com", topics=["newsletter"])
    work()
    [(sender, rcpts, message)] = smtp_sink.take_envelopes()
    with runtime.sessions() as session:
        outbox_id = session.scalar(select(OutboxEmail.id))
    assert verp.read(runtime.settings, sender) == verp.VerpRef(verp.OUTBOX, outbox_id)
    assert message["From"] == from_header(runtime.settings)  # the visible sender does not change
