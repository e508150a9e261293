"""Early-access links: the window from the wave's start to public_at, the code, redemptions per wave."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from newsletter.core import clock
from newsletter.early_access import access as early_access
from newsletter.early_access.access import redemptions_per_wave
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState, Wave, WaveStatus
from newsletter.subscribers import links

TOKEN = "store-api-token-0123456789"
SECRET = "shared-with-the-store-0123456789"
SALE = "https://shop.example/winter-sale?ref=mail"
DOC = Path(__file__).parent.parent / "docs" / "early-access.md"


def store_snippet() -> dict:
    """Run the Python blocks of docs/early-access.md: the function, then its worked example."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(blocks[0], namespace)  # noqa: S102 - our own documentation
    exec(blocks[1], dict(namespace))  # noqa: S102 - the worked example's asserts
    return namespace


@pytest.fixture
def sale(make_app, make_subscriber):
    """A campaign with two waves (vip in 1 hour, everyone in 1 day), public in 2 days, over in 5."""
    app = make_app(API_TOKEN=TOKEN, EARLY_ACCESS_SECRET=SECRET)
    runtime = app.extensions["newsletter"]
    ann = make_subscriber("ann@example.com", topics=("early-access",))
    bob = make_subscriber("bob@example.com", topics=("early-access",))
    cid = make_subscriber("cid@example.com", topics=("early-access",))
    now = clock.now()
    with runtime.sessions() as session:
        campaign = Campaign(
            slug="winter-sale",
            name="Winter sale",
            topic_slug="early-access",
            content_hash="0" * 64,
            compiled={},
            sale_url=SALE,
            public_at=now + timedelta(days=2),
            ends_at=now + timedelta(days=5),
            deadline=now + timedelta(days=2),
        )
        campaign.waves = [
            Wave(position=0, name="vip", audience="tier == 'gold'", send_at=now + timedelta(hours=1)),
            Wave(position=1, name="everyone", audience="true", send_at=now + timedelta(days=1)),
        ]
        session.add(campaign)
        session.flush()
        for subscriber, wave in ((ann, campaign.waves[0]), (bob, campaign.waves[1])):
            session.add(
                Delivery(
                    campaign_id=campaign.id,
                    wave_id=wave.id,
                    subscriber_id=subscriber.id,
                    state=DeliveryState.SENT,
                    sent_at=now,
                )
            )
        session.commit()
        campaign_id = campaign.id

    def link(subscriber) -> str:
        return urlsplit(links.early_access_url(app.settings, subscriber, campaign_id)).path

    def start(position: int) -> None:
        """What the sending engine does when a wave is due (the clock is moved there first)."""
        with runtime.sessions() as session:
            wave = session.scalar(
                select(Wave).where(Wave.campaign_id == campaign_id, Wave.position == position)
            )
            clock.travel(wave.send_at - clock.now() + timedelta(minutes=1))
            wave.status, wave.started_at = WaveStatus.SENDING, clock.now()
            session.commit()

    def redemptions() -> dict[str, int]:
        with runtime.sessions() as session:
            return redemptions_per_wave(session, campaign_id)

    class Sale:
        pass

    s = Sale()
    s.app, s.client, s.runtime, s.id = app, app.test_client(), runtime, campaign_id
    s.ann, s.bob, s.cid = ann, bob, cid
    s.link, s.start, s.redemptions = link, start, redemptions
    return s


def code_of(response) -> str:
    [code] = parse_qs(urlsplit(response.headers["Location"]).query)["nl_code"]
    return code


def verify(client, code: str):
    return client.get(
        "/api/early-access/verify", query_string={"code": code}, headers={"Authorization": f"Bearer {TOKEN}"}
    )


def test_the_window_from_wave_start_to_public_at_and_after(sale):
    client = sale.client
    # Before the wave: a friendly page with the time, nothing recorded.
    before = client.get(sale.link(sale.ann))
    assert before.status_code == 200
    page = before.get_data(as_text=True)
    assert "Your early access to <strong>Winter sale</strong> starts at" in page
    with sale.runtime.sessions() as session:
        wave = session.scalar(select(Wave).where(Wave.campaign_id == sale.id, Wave.position == 0))
    assert wave.send_at.strftime("%d %B %Y, %H:%M") + " UTC" in page
    assert sale.redemptions() == {"vip": 0, "everyone": 0}

    # The vip wave starts: Ann goes to the sale with a code; Bob (next wave) still waits.
    sale.start(0)
    opened = client.get(sale.link(sale.ann))
    assert opened.status_code == 303
    location = urlsplit(opened.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://shop.example/winter-sale"
    assert parse_qs(location.query)["ref"] == ["mail"]
    assert opened.headers["Cache-Control"] == "no-store"
    assert client.get(sale.link(sale.bob)).status_code == 200
    with sale.runtime.sessions() as session:
        first = session.scalar(select(Delivery.redeemed_at).where(Delivery.subscriber_id == sale.ann.id))
    assert first is not None and abs(first - clock.now()) < timedelta(seconds=5)

    # A second click: a fresh code, the same redemption.
    clock.travel(timedelta(minutes=30))
    assert client.get(sale.link(sale.ann)).status_code == 303
    with sale.runtime.sessions() as session:
        again = session.scalar(select(Delivery.redeemed_at).where(Delivery.subscriber_id == sale.ann.id))
    assert again == first
    assert sale.redemptions() == {"vip": 1, "everyone": 0}

    # The second wave: Bob's link opens too; each wave counts its own people once.
    sale.start(1)
    assert client.get(sale.link(sale.bob)).status_code == 303
    assert client.get(sale.link(sale.bob)).status_code == 303
    assert client.get(sale.link(sale.ann)).status_code == 303
    assert sale.redemptions() == {"vip": 1, "everyone": 1}

    # public_at: open to everyone, the plain link, no code.
    clock.travel(timedelta(days=1))
    public = client.get(sale.link(sale.ann))
    assert public.status_code == 200
    text = public.get_data(as_text=True)
    assert (
        "The sale is open to everyone" in text and 'href="https://shop.example/winter-sale?ref=mail"' in text
    )
    assert "nl_code" not in text

    # ends_at: over.
    clock.travel(timedelta(days=3))
    ended = client.get(sale.link(sale.ann))
    assert ended.status_code == 410 and "The sale has ended" in ended.get_data(as_text=True)
    assert sale.redemptions() == {"vip": 1, "everyone": 1}


def test_the_code_verifies_by_api_and_by_the_documented_snippet(sale):
    sale.start(0)
    before = clock.now()
    response = sale.client.get(sale.link(sale.ann))
    code = code_of(response)
    expires = clock.now() + timedelta(minutes=15)

    answer = verify(sale.client, code)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["valid"] is True and body["campaign"] == "winter-sale"
    # the code's expiry is set during the GET: between the clock before it and after it
    expires_at = datetime.fromisoformat(body["expires_at"].removesuffix("Z"))
    assert (before + timedelta(minutes=15)).replace(microsecond=0) <= expires_at <= expires
    assert len(body["subscriber_ref"]) == 16 and str(sale.ann.id) != body["subscriber_ref"]

    snippet = store_snippet()
    check = snippet["check_early_access_code"]
    now = clock.now().replace(tzinfo=UTC).timestamp()
    claims = check(code, SECRET, "winter-sale", now=now)
    assert claims == {
        "campaign": "winter-sale",
        "exp": int(expires_at.replace(tzinfo=UTC).timestamp()),  # the API and the snippet agree
        "ref": body["subscriber_ref"],
        "v": 1,
    }
    assert check(code, SECRET, "summer-sale", now=now) is None
    assert check(code, "not-the-secret-at-all", "winter-sale", now=now) is None
    tampered = "f" + code[1:]  # the claims changed, the signature did not
    assert check(tampered, SECRET, "winter-sale", now=now) is None
    assert verify(sale.client, tampered).get_json() == {
        "valid": False,
        "reason": "bad signature",
        "campaign": None,
        "subscriber_ref": None,
        "expires_at": None,
    }
    assert verify(sale.client, "no-dot-here").get_json()["reason"] == "malformed"
    # The same person gets the same reference on every click; another person gets another.
    clock.travel(timedelta(minutes=1))
    again = check(code_of(sale.client.get(sale.link(sale.ann))), SECRET, "winter-sale", now=now + 60)
    assert again["ref"] == claims["ref"]

    # Expired after 15 minutes: the API says why, the snippet refuses.
    clock.travel(timedelta(minutes=15))
    late = verify(sale.client, code).get_json()
    assert late["valid"] is False and late["reason"] == "expired" and late["campaign"] == "winter-sale"
    assert check(code, SECRET, "winter-sale", now=clock.now().replace(tzinfo=UTC).timestamp()) is None


def test_the_verify_api_needs_the_token(sale):
    assert sale.client.get("/api/early-access/verify?code=x").status_code == 401
    wrong = sale.client.get(
        "/api/early-access/verify?code=x", headers={"Authorization": "Bearer " + "n" * 20}
    )
    assert wrong.status_code == 403
    missing = sale.client.get("/api/early-access/verify", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 400 and missing.get_json()["error"]


def test_without_a_configured_secret_the_api_still_verifies(make_app, make_subscriber):
    app = make_app(API_TOKEN=TOKEN)
    code = early_access.make_code(app.settings, "winter-sale", 7, clock.now())
    answer = app.test_client().get(
        "/api/early-access/verify", query_string={"code": code}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.get_json()["valid"] is True
    # ... and the key is not SECRET_KEY itself.
    assert store_snippet()["check_early_access_code"](code, app.settings.secret_key, "winter-sale") is None


def test_bad_links_get_the_friendly_page(sale):
    sale.start(0)
    token = sale.link(sale.ann).rsplit("/", 1)[1]
    tampered = sale.client.get(f"/early-access/{token[:-3]}abc")
    assert tampered.status_code == 400 and "This link does not work" in tampered.get_data(as_text=True)
    # A link made for another purpose (unsubscribe) does not open the sale.
    other = urlsplit(links.unsubscribe_url(sale.app.settings, sale.ann)).path.rsplit("/", 1)[1]
    assert sale.client.get(f"/early-access/{other}").status_code == 400
    # Cid got no invitation: a genuine link to this campaign, but no delivery.
    uninvited = sale.client.get(sale.link(sale.cid))
    assert uninvited.status_code == 404 and "not for this sale" in uninvited.get_data(as_text=True)
    # A campaign that does not exist.
    ghost = urlsplit(links.early_access_url(sale.app.settings, sale.ann, 999)).path
    assert sale.client.get(ghost).status_code == 404
    assert sale.redemptions() == {"vip": 0, "everyone": 0}


def test_a_cancelled_sale_has_ended(sale):
    sale.start(0)
    with sale.runtime.sessions() as session:
        session.get(Campaign, sale.id).status = CampaignStatus.CANCELLED
        session.commit()
    response = sale.client.get(sale.link(sale.ann))
    assert response.status_code == 410 and sale.redemptions() == {"vip": 0, "everyone": 0}


def test_with_code_keeps_the_sale_url_intact():
    url = early_access.with_code("https://s.example/a?x=1&nl_code=old#top", "C.D")
    assert url == "https://s.example/a?x=1&nl_code=C.D#top"
