"""The frozen campaign: a typed object over ``Campaign.compiled``, same JSON as rows already stored."""

from __future__ import annotations

import dataclasses
import json

import pytest

from newsletter.campaigns import scheduling
from newsletter.campaigns.frozen import ALL_WAVES, FrozenCampaign, FrozenEmail
from newsletter.campaigns.sending import skeletons_for
from newsletter.models import Campaign
from tests.campaign_helpers import EXAMPLES

#: A row as the code before these types wrote it (scheduling's dict literal).
OLD_ROW = {
    "sender": "Shop <news@shop.example>",
    "envelope_from": "news@shop.example",
    "files": {"campaign.toml": "ab" * 32, "email.mjml": "cd" * 32},
    "waves": {
        "all": {
            "subject": "Hello",
            "html": "<p>Hi \x00slot1\x00</p>",
            "text": "Hi \x00slot1\x00",
            "slots": {"\x00slot1\x00": ["first_name", "html", "there"]},
            "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "Precedence": "bulk"},
        },
        "vip": {"subject": "Early", "html": "<p>x</p>", "text": "x", "slots": {}, "headers": {}},
    },
}


def test_an_old_row_reads_back_typed_and_writes_the_same_json():
    frozen = FrozenCampaign.from_json(json.loads(json.dumps(OLD_ROW)))
    assert frozen.sender == "Shop <news@shop.example>" and frozen.envelope_from == "news@shop.example"
    assert frozen.waves[ALL_WAVES].slots == {"\x00slot1\x00": ("first_name", "html", "there")}
    assert frozen.email_for("vip").subject == "Early"
    assert frozen.email_for("unknown-wave") is frozen.waves[ALL_WAVES]
    assert frozen.email_for(None) is frozen.waves[ALL_WAVES]
    assert frozen.to_json() == OLD_ROW
    assert json.loads(json.dumps(frozen.to_json())) == OLD_ROW


def test_missing_parts_of_a_row_have_defaults():
    frozen = FrozenCampaign.from_json({"sender": "Shop <news@shop.example>", "waves": {}})
    assert frozen.envelope_from == "news@shop.example" and frozen.files == {}
    assert FrozenCampaign.of(Campaign(compiled={})).waves == {}
    email = FrozenEmail.from_json({"subject": "s", "html": "h", "text": "t"})
    assert email.slots == {} and email.headers == {}


def test_the_frozen_objects_are_read_only():
    frozen = FrozenCampaign.from_json(OLD_ROW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.sender = "someone else"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.waves[ALL_WAVES].subject = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        frozen.envelope  # type: ignore[attr-defined]  # noqa: B018


def test_scheduling_stores_a_frozen_campaign_that_sending_reads(app, runtime):
    with runtime.sessions() as session:
        campaign = scheduling.schedule(session, runtime.settings, EXAMPLES / "monthly-newsletter")
        session.commit()
        stored = session.get(Campaign, campaign.id)
        frozen = FrozenCampaign.of(stored)
        assert FrozenCampaign.from_json(frozen.to_json()) == frozen
        assert frozen.to_json() == stored.compiled  # the column holds exactly the typed object's JSON
        assert frozen.files and "email.mjml" in frozen.files
        assert frozen.envelope_from and frozen.envelope_from in frozen.sender
        skeletons = skeletons_for(stored)
        assert set(skeletons) == {wave.id for wave in stored.waves}
        for wave in stored.waves:
            assert skeletons[wave.id].sender_domain == frozen.envelope_from.rsplit("@", 1)[1]
