"""Click and open tracking, privacy first: real campaigns through the SMTP sink, real links followed."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from newsletter.campaigns import scheduling, tracking
from newsletter.campaigns.files import load_campaign
from newsletter.campaigns.frozen import FrozenCampaign, FrozenEmail
from newsletter.core import clock
from newsletter.core.config import Settings
from newsletter.feedback.clicks import is_scanner_agent
from newsletter.mail import verp
from newsletter.models import Campaign, Delivery, DeliveryEvent, SignalKind, Subscriber
from newsletter.subscribers import links
from tests.sending_helpers import now_floor, run_engine, write_campaign

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
TARGETS = ["https://shop.example/new", "https://shop.example/recipes/winter-soup"]


def send(make_app, make_subscriber, smtp_sink, work, tmp_path, **flags):
    """The monthly newsletter (two links) sent to ann and bob with ``flags`` in campaign.toml."""
    app = make_app(MARKETING_CAPS="", QUIET_HOURS="", BOUNCE_ADDRESS="bounces@store.example")
    runtime = app.extensions["newsletter"]
    for address in ("ann@example.com", "bob@example.com"):
        make_subscriber(address, topics=("early-access",))
    folder = write_campaign(tmp_path, waves=[("all", "all", now_floor() - timedelta(minutes=1))])
    toml = folder / "campaign.toml"  # top-level keys go before the [[wave]] tables
    keys = "".join(f"{key} = {str(value).lower()}\n" for key, value in flags.items())
    toml.write_text(keys + toml.read_text("utf-8"), "utf-8")
    with runtime.sessions() as session:
        scheduling.schedule(session, runtime.settings, folder)
        session.commit()
    run_engine(runtime, work)
    messages = {}
    for _sender, rcpts, message in smtp_sink.take_envelopes():
        messages[rcpts[0]] = message
    assert set(messages) == {"ann@example.com", "bob@example.com"}
    with runtime.sessions() as session:
        deliveries = dict(session.execute(select(Subscriber.email, Delivery.id).join(Subscriber)).all())
    return app, messages, deliveries


@pytest.fixture
def tracked(make_app, make_subscriber, smtp_sink, work, tmp_path):
    return send(make_app, make_subscriber, smtp_sink, work, tmp_path, track_clicks=True)


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def hrefs(message) -> list[str]:
    return re.findall(r'<a\b[^>]*\shref="([^"]+)"', html_of(message))


def tracked_paths(message) -> list[str]:
    return [urlsplit(h).path for h in hrefs(message) if "/c/" in h]


def events(app, kind=None) -> list[DeliveryEvent]:
    with app.extensions["newsletter"].sessions() as session:
        query = select(DeliveryEvent).order_by(DeliveryEvent.id)
        if kind is not None:
            query = query.where(DeliveryEvent.kind == kind)
        found = list(session.scalars(query))
        session.expunge_all()
        return found


def delivery(app, delivery_id) -> Delivery:
    with app.extensions["newsletter"].sessions() as session:
        found = session.get(Delivery, delivery_id)
        session.expunge(found)
        return found


def test_a_tracked_campaigns_links_redirect_to_their_targets_and_count_per_link(tracked):
    app, messages, deliveries = tracked
    ann = messages["ann@example.com"]
    paths = tracked_paths(ann)
    assert len(paths) == 2 and all(h.startswith("https://newsletter.test/c/") for h in hrefs(ann)[:2])
    token = paths[0].split("/")[2]
    assert paths == [f"/c/{token}/0", f"/c/{token}/1"]  # one token per message, the link's index after it
    assert tracking.read_token(app.settings, token) == tracking.TrackedRef(
        delivery(app, deliveries["ann@example.com"]).campaign_id, deliveries["ann@example.com"]
    )
    assert tracked_paths(messages["bob@example.com"])[0] != paths[0]  # bob's own token
    # the footer's personal links are not tracked; the plain text keeps the original links
    assert any("/unsubscribe/" in h for h in hrefs(ann)) and any("/preferences/" in h for h in hrefs(ann))
    text = ann.get_body(("plain",)).get_content()
    assert TARGETS[0] in text and "/c/" not in text
    assert "/o/" not in html_of(ann)  # no pixel unless track_opens
    with app.extensions["newsletter"].sessions() as session:
        frozen = FrozenCampaign.of(session.scalar(select(Campaign)))
    assert frozen.track_clicks and list(frozen.links) == TARGETS and not frozen.track_opens
    assert frozen.email_for(None).links == (0, 1) and FrozenCampaign.from_json(frozen.to_json()) == frozen

    client = app.test_client()
    clock.travel(timedelta(minutes=10))  # a person, reading the mail later
    first = client.get(paths[1], headers={"User-Agent": BROWSER})
    assert first.status_code == 302 and first.headers["Location"] == TARGETS[1]
    first_click = delivery(app, deliveries["ann@example.com"]).first_click_at
    clock.travel(timedelta(minutes=3))
    again = client.get(paths[1], headers={"User-Agent": BROWSER})
    assert again.status_code == 302 and again.headers["Location"] == TARGETS[1]
    clicks = events(app, SignalKind.CLICK)
    assert [(e.delivery_id, e.link, e.source) for e in clicks] == [
        (deliveries["ann@example.com"], 1, "web")
    ] * 2
    assert clicks[0].user_agent == BROWSER
    assert clicks[0].campaign_id == delivery(app, deliveries["ann@example.com"]).campaign_id
    ann_row = delivery(app, deliveries["ann@example.com"])
    assert ann_row.first_click_at == first_click is not None  # the first click stays the first
    assert delivery(app, deliveries["bob@example.com"]).first_click_at is None


@pytest.mark.parametrize(
    "path",
    [
        "/c/{forged}/0",  # a made-up signature
        "/c/{other_campaign}/0",  # the same delivery under another campaign id
        "/c/{verp}/0",  # the message's VERP tag is no click token
        "/c/{token}/2",  # the message has two links
        "/c/{token}/99",
        "/c/{token}/-1",
        "/c/{token}?url=https://evil.example/",
        "/c/{token}/x?url=https://evil.example/",
        "/c/?url=https://evil.example/",
    ],
)
def test_a_forged_token_or_a_link_the_message_lacks_is_a_404_never_a_redirect(tracked, path):
    app, messages, deliveries = tracked
    token = tracked_paths(messages["ann@example.com"])[0].split("/")[2]
    campaign_id = delivery(app, deliveries["ann@example.com"]).campaign_id
    ids = token.rsplit("-", 1)[0]
    forged = f"{ids}-{'a' * 16}"
    other = tracking.make_token(
        Settings(secret_key="not ours"), campaign_id + 1, deliveries["ann@example.com"]
    )
    other_campaign = f"{other.split('-', 1)[0]}-{token.split('-', 1)[1]}"
    tag = verp.tag(app.settings, verp.DELIVERY, deliveries["ann@example.com"])
    url = path.format(forged=forged, other_campaign=other_campaign, verp=tag, token=token)
    response = app.test_client().get(url, headers={"User-Agent": BROWSER})
    assert response.status_code == 404 and "Location" not in response.headers
    assert "evil" not in response.get_data(as_text=True)
    assert events(app) == []


def test_a_url_in_the_query_string_is_never_followed(tracked):
    app, messages, _deliveries = tracked
    path = tracked_paths(messages["ann@example.com"])[0]
    clock.travel(timedelta(minutes=10))
    response = app.test_client().get(
        f"{path}?url=https://evil.example/&next=https://evil.example/", headers={"User-Agent": BROWSER}
    )
    assert response.status_code == 302 and response.headers["Location"] == TARGETS[0]


@pytest.mark.parametrize(
    ("method", "agent"),
    [
        ("HEAD", BROWSER),
        ("GET", "Mozilla/5.0 (compatible; BarracudaCentral/1.0)"),
        ("GET", "Mimecast URL Protect"),
        ("GET", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
        ("GET", "python-requests/2.31.0"),
        ("GET", ""),
    ],
)
def test_head_requests_and_scanner_agents_are_scanners_and_still_redirected(tracked, method, agent):
    app, messages, deliveries = tracked
    path = tracked_paths(messages["ann@example.com"])[0]
    clock.travel(timedelta(minutes=10))
    response = app.test_client().open(path, method=method, headers={"User-Agent": agent})
    assert response.status_code == 302 and response.headers["Location"] == TARGETS[0]
    assert [(e.kind, e.link) for e in events(app)] == [(SignalKind.SCANNER, 0)]
    assert delivery(app, deliveries["ann@example.com"]).first_click_at is None


def test_every_link_hit_within_seconds_of_sending_is_a_scanner_not_a_click(tracked):
    app, messages, deliveries = tracked
    paths = tracked_paths(messages["ann@example.com"])
    client = app.test_client()
    clock.travel(timedelta(seconds=5))  # a security gateway follows every link as the mail arrives
    first = client.get(paths[0], headers={"User-Agent": BROWSER})
    assert delivery(app, deliveries["ann@example.com"]).first_click_at is not None  # not known yet...
    clock.travel(timedelta(seconds=2))
    second = client.get(paths[1], headers={"User-Agent": BROWSER})
    assert (first.status_code, second.status_code) == (302, 302)
    assert second.headers["Location"] == TARGETS[1]
    # ... the burst turns the first hit into a scanner's too
    assert [(e.kind, e.link) for e in events(app)] == [(SignalKind.SCANNER, 0), (SignalKind.SCANNER, 1)]
    assert delivery(app, deliveries["ann@example.com"]).first_click_at is None

    clock.travel(timedelta(hours=2))  # the person, later, clicks one link
    client.get(paths[1], headers={"User-Agent": BROWSER})
    last = events(app)[-1]
    assert last.kind == SignalKind.CLICK
    assert delivery(app, deliveries["ann@example.com"]).first_click_at == last.at
    # bob's message is untouched by ann's scanner
    assert delivery(app, deliveries["bob@example.com"]).first_click_at is None


def test_one_link_clicked_soon_after_sending_is_a_click(tracked):
    app, messages, deliveries = tracked
    clock.travel(timedelta(seconds=20))
    app.test_client().get(tracked_paths(messages["bob@example.com"])[0], headers={"User-Agent": BROWSER})
    assert [e.kind for e in events(app)] == [SignalKind.CLICK]
    assert delivery(app, deliveries["bob@example.com"]).first_click_at is not None


def test_an_untracked_campaign_keeps_its_links_and_has_no_pixel(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    app, messages, deliveries = send(make_app, make_subscriber, smtp_sink, work, tmp_path)
    ann = messages["ann@example.com"]
    assert [h for h in hrefs(ann) if h.startswith("https://shop.example/")] == TARGETS
    assert "/c/" not in html_of(ann) and "/o/" not in html_of(ann) and "<img" not in html_of(ann)
    with app.extensions["newsletter"].sessions() as session:
        compiled = session.scalar(select(Campaign.compiled))
    assert "links" not in compiled and "track_clicks" not in compiled  # the row's old shape
    # even a correctly signed token of this campaign leads nowhere
    campaign_id = delivery(app, deliveries["ann@example.com"]).campaign_id
    token = tracking.make_token(app.settings, campaign_id, deliveries["ann@example.com"])
    assert app.test_client().get(f"/c/{token}/0").status_code == 404
    pixel = app.test_client().get(f"/o/{token}")
    assert pixel.mimetype == "image/gif" and events(app) == []


def test_the_open_pixel_records_the_first_open_only(make_app, make_subscriber, smtp_sink, work, tmp_path):
    app, messages, deliveries = send(make_app, make_subscriber, smtp_sink, work, tmp_path, track_opens=True)
    html = html_of(messages["ann@example.com"])
    [src] = re.findall(r'<img src="(https://newsletter\.test/o/[^"]+)" width="1" height="1" alt=""', html)
    assert html.index(src) > html.index("1 Example Street")  # at the end, after the footer
    assert "/c/" not in html  # opens without clicks: the links stay as they are
    client = app.test_client()
    assert client.head(urlsplit(src).path).status_code == 200 and events(app) == []
    response = client.get(urlsplit(src).path, headers={"User-Agent": BROWSER})
    assert response.status_code == 200 and response.mimetype == "image/gif"
    assert response.data.startswith(b"GIF89a") and len(response.data) == 42
    assert "no-store" in response.headers["Cache-Control"] and response.headers["Pragma"] == "no-cache"
    opened = delivery(app, deliveries["ann@example.com"]).opened_at
    assert opened is not None
    clock.travel(timedelta(hours=1))
    client.get(urlsplit(src).path)
    assert [(e.kind, e.delivery_id) for e in events(app)] == [
        (SignalKind.OPEN, deliveries["ann@example.com"])
    ]
    assert delivery(app, deliveries["ann@example.com"]).opened_at == opened
    assert client.get("/o/2x-1k2-aaaaaaaaaaaaaaaa").status_code == 404


def _list_unsubscribe(message) -> str:
    return urlsplit(str(message["List-Unsubscribe"]).strip("<>")).path


def test_unsubscribes_through_a_campaigns_links_land_on_its_delivery(tracked):
    app, messages, deliveries = tracked
    client = app.test_client()
    # the mailbox's one-click button (RFC 8058), twice
    one_click = _list_unsubscribe(messages["ann@example.com"])
    for _ in range(2):
        response = client.post(one_click, data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 200
    # the page's button, from the link in the body
    [page] = [urlsplit(h).path for h in hrefs(messages["bob@example.com"]) if "/unsubscribe/" in h]
    assert page == _list_unsubscribe(messages["bob@example.com"])
    assert client.get(page).status_code == 200
    assert client.post(page, data={"scope": "everything"}).status_code == 200
    found = events(app, SignalKind.UNSUBSCRIBE)
    assert sorted((e.delivery_id, e.source) for e in found) == sorted(
        [(deliveries["ann@example.com"], "web"), (deliveries["bob@example.com"], "web")]
    )
    assert all(e.campaign_id == delivery(app, e.delivery_id).campaign_id for e in found)
    for address in ("ann@example.com", "bob@example.com"):
        assert delivery(app, deliveries[address]).unsubscribed_at is not None


def test_an_old_unsubscribe_link_without_a_campaign_still_works(tracked, make_subscriber):
    app, _messages, _deliveries = tracked
    carl = make_subscriber("carl@example.com", topics=("newsletter",))
    path = urlsplit(links.unsubscribe_url(app.settings, carl)).path
    response = app.test_client().post(path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and events(app, SignalKind.UNSUBSCRIBE) == []


def test_a_database_outage_still_redirects_a_known_link(tracked, make_app, caplog):
    app, messages, _deliveries = tracked
    path = tracked_paths(messages["ann@example.com"])[1]
    clock.travel(timedelta(minutes=10))
    assert app.test_client().get(path, headers={"User-Agent": BROWSER}).status_code == 302
    down = make_app(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")
    caplog.set_level(logging.WARNING, logger="newsletter.feedback.views")
    response = down.test_client().get(path, headers={"User-Agent": BROWSER})
    assert response.status_code == 302 and response.headers["Location"] == TARGETS[1]
    [line] = [r.getMessage() for r in caplog.records if r.name == "newsletter.feedback.views"]
    assert "not recorded" in line and "cached" in line
    # a link this process never saw cannot be trusted without the database: a page, no redirect
    unknown = tracking.make_token(app.settings, 10**6, 1)
    response = down.test_client().get(f"/c/{unknown}/0", headers={"User-Agent": BROWSER})
    assert response.status_code == 503 and "Location" not in response.headers


# --- the parts, without the engine ---------------------------------------------------------------


def test_only_plain_web_links_are_tracked_and_each_url_gets_one_index():
    unsubscribe = "~NL~unsubscribe_url~url~"
    html = (
        "<html><body>"
        '<a href="https://shop.example/a?x=1&amp;y=2">A</a>'
        "<a class=\"b\" href='HTTP://shop.example/b'>B</a>"
        '<a href="https://shop.example/a?x=1&amp;y=2">A again</a>'
        '<a href="mailto:help@store.example">mail</a><a href="tel:+123">call</a><a href="#top">top</a>'
        f'<a href="{unsubscribe}">unsubscribe</a>'
        '<a href="https://shop.example/me?e=~NL~email~query~">personal</a>'
        '<a data-href="https://shop.example/data">no href</a>'
        "</body></html>"
    )
    emails = {"all": FrozenEmail("s", html, "https://shop.example/a", {})}
    [email], found = (lambda t: (list(t[0].values()), t[1]))(tracking.apply(emails, clicks=True, opens=False))
    assert found == ("https://shop.example/a?x=1&y=2", "HTTP://shop.example/b")
    assert email.links == (0, 1) and email.text == "https://shop.example/a"
    assert re.findall(r'\shref="([^"]+)"', email.html) == [
        "~NL~click_url~url~/0",
        "~NL~click_url~url~/1",
        "~NL~click_url~url~/0",
        "mailto:help@store.example",
        "tel:+123",
        "#top",
        unsubscribe,
        "https://shop.example/me?e=~NL~email~query~",
    ]
    assert 'data-href="https://shop.example/data"' in email.html and "<img" not in email.html


def test_tokens_verify_only_with_our_keys():
    settings = Settings(secret_key="k" * 32)
    token = tracking.make_token(settings, 7, 123456)
    assert re.fullmatch(r"7-2n9c-[a-z2-7]{16}", token)
    assert tracking.read_token(settings, token) == tracking.TrackedRef(7, 123456)
    assert tracking.read_token(Settings(secret_key="n" * 32, secret_key_fallbacks=("k" * 32,)), token)
    assert tracking.read_token(Settings(secret_key="n" * 32), token) is None
    assert tracking.read_token(settings, token.upper()) is None
    assert tracking.read_token(settings, token.replace("7-", "8-", 1)) is None
    assert tracking.read_token(settings, verp.tag(settings, verp.DELIVERY, 123456)) is None


@pytest.mark.parametrize(
    ("agent", "scanner"),
    [
        (BROWSER, False),
        ("Mozilla/5.0 (Linux; Android 10; CUBOT KINGKONG 5) Mobile Safari/537.36", False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148", False),
        ("Mozilla/5.0 (compatible; Microsoft Defender SafeLinks)", True),
        ("Proofpoint URL Defense", True),
        ("Google-Safety; (+https://developers.google.com/safe-browsing)", True),
        ("Mozilla/5.0 HeadlessChrome/120.0", True),
        ("AhrefsBot/7.0", True),
        (None, True),
    ],
)
def test_the_scanner_agent_list(agent, scanner):
    assert is_scanner_agent(agent) is scanner


def test_validate_points_at_a_track_key_that_is_not_a_boolean(tmp_path):
    from tests.campaign_helpers import MJML, TOML
    from tests.campaign_helpers import write_campaign as write_files

    folder = write_files(tmp_path, TOML + 'track_clicks = "yes"\ntrack_opens = 1\n', MJML)
    problems = []
    source = load_campaign(folder, problems)
    assert [str(p) for p in problems] == [
        f"{folder}/campaign.toml:6:16: track_clicks must be true or false (without quotes), got 'yes'",
        f"{folder}/campaign.toml:7:15: track_opens must be true or false (without quotes), got 1",
    ]
    assert source is not None and not source.track_clicks and not source.track_opens
    good = write_files(tmp_path, TOML + "track_clicks = true\n", MJML, slug="good")
    assert load_campaign(good, problems := []).track_clicks and problems == []


def test_campaign_validate_reports_a_bad_track_clicks_at_its_place(app, tmp_path):
    from tests.campaign_helpers import MJML, TOML
    from tests.campaign_helpers import write_campaign as write_files
    from tests.test_campaign_cli import run

    folder = write_files(tmp_path, 'track_clicks = "yes"\n' + TOML, MJML)
    result = run(app, "validate", str(folder))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [  # problems on stderr
        f"{folder}/campaign.toml:1:16: track_clicks must be true or false (without quotes), got 'yes'",
        f"{folder}: 1 error(s), 0 warning(s)",
    ]
