"""Reward codes: pools imported from the store's files, generated codes the store can check."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from newsletter.campaigns import batches, rewards, scheduling
from newsletter.cli import cli
from newsletter.core import clock
from newsletter.mail.transports import make_transport
from newsletter.models import Campaign, CampaignStatus, Delivery, DeliveryState, RewardCode
from tests.test_cli import env_for


def pool_codes(runtime, pool: str) -> list[str]:
    with runtime.sessions() as session:
        return list(
            session.scalars(select(RewardCode.code).where(RewardCode.pool == pool).order_by(RewardCode.id))
        )


def test_import_reports_duplicates_and_blanks_and_list_counts_the_pool(app, runtime, tmp_path):
    path = tmp_path / "gift.csv"
    path.write_text("code,value\nGIFT-1,10\n\nGIFT-2,10\nGIFT-1,10\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(path)], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert "2 added to pool gift, 1 duplicates skipped, 1 blank lines" in result.output
    assert f"{path}:5: duplicate of line 2: GIFT-1" in result.output
    assert pool_codes(runtime, "gift") == ["GIFT-1", "GIFT-2"]

    again = tmp_path / "more.txt"
    again.write_text("GIFT-2\nGIFT-3\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(again)], env=env_for(app))
    assert "1 added to pool gift, 1 duplicates skipped" in result.output
    assert f"{again}:1: already in pool gift: GIFT-2" in result.output

    result = CliRunner().invoke(cli, ["codes", "list"], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split() == ["gift", "3", "0", "3", "0"]


def test_a_bad_code_refuses_the_whole_file(app, runtime, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("OK-1\n" + "X" * 201 + "\nOK-2\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["codes", "import", "gift", str(path)], env=env_for(app))
    assert result.exit_code == 1
    assert f"{path}:2: not a code" in result.output
    assert "Traceback" not in result.output
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(RewardCode)) == 0
    result = CliRunner().invoke(cli, ["codes", "import", "Bad Name!", str(path)], env=env_for(app))
    assert result.exit_code == 1 and "pool name" in result.output


def test_generated_code_verifies_and_an_altered_one_does_not(app):
    settings = app.settings
    code = rewards.make_code(settings, "VIP", 42, date(2030, 1, 31))
    assert code == rewards.make_code(settings, "VIP", 42, date(2030, 1, 31))  # deterministic
    assert rewards.verify_code(settings, code, date(2030, 1, 31)).status == "valid"
    assert rewards.verify_code(settings, code.lower(), date(2030, 1, 1)).status == "valid"
    assert rewards.verify_code(settings, code, date(2030, 2, 1)).status == "expired"
    prefix, delivery, expires, mac = code.split("-")
    for altered in (
        f"{prefix}-43-{expires}-{mac}",
        f"{prefix}-{delivery}-20991231-{mac}",
        f"{prefix}-{delivery}-{expires}-{'A' if mac[0] != 'A' else 'B'}{mac[1:]}",
        "nonsense",
        "",
    ):
        assert rewards.verify_code(settings, altered, date(2030, 1, 1)).status == "unknown", altered


# --- end to end: a real send over SMTP on loopback -------------------------------------------

NO_CAPS = {"MARKETING_CAPS": "", "QUIET_HOURS": ""}
REWARD_MJML = """{% extends "base.mjml" %}
{% block content %}
<mj-section background-color="#ffffff" padding="0 24px">
  <mj-column>
    <mj-text>Hello {{ subscriber.first_name or "there" }}, your code: {{ reward.code }}</mj-text>
    <mj-text>Valid until {{ reward.expires or "the end of the year" }}.</mj-text>
  </mj-column>
</mj-section>
{% endblock %}
"""


def reward_campaign(tmp_path, reward: str, slug: str = "vip-gift"):
    from tests.sending_helpers import now_floor, write_campaign

    folder = write_campaign(
        tmp_path, waves=[("all", "all", now_floor() + timedelta(minutes=1))], topic="newsletter", slug=slug
    )
    (folder / "email.mjml").write_text(REWARD_MJML, "utf-8")
    with open(folder / "campaign.toml", "a", encoding="utf-8") as handle:
        handle.write("\n[reward]\n" + reward + "\n")
    return folder


def code_in(message) -> str:
    body = message.get_body(("plain",)).get_content()
    return re.search(r"your code: (\S+)", body).group(1)


def load_pool(runtime, pool: str, codes: list[str]) -> None:
    with runtime.sessions() as session:
        rewards.import_codes(session, pool, "\n".join(codes))
        session.commit()


def test_pool_codes_go_once_per_person_and_per_code_across_a_real_send(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(BATCH_SIZE="3", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    people = [f"p{i}@example.com" for i in range(7)]
    for email in people:
        make_subscriber(email, topics=("newsletter",))
    load_pool(runtime, "gift", [f"GIFT-{i:03}" for i in range(10)])
    schedule(runtime, reward_campaign(tmp_path, 'pool = "gift"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    messages = smtp_sink.take()
    assert sorted(str(m["To"]) for m in messages) == sorted(people)
    sent_codes = [code_in(m) for m in messages]
    assert len(set(sent_codes)) == 7 and all(c.startswith("GIFT-") for c in sent_codes)
    with runtime.sessions() as session:
        ledger = dict(session.execute(select(Delivery.reward_code, Delivery.subscriber_id)).all())
        assigned = dict(
            session.execute(
                select(RewardCode.code, RewardCode.delivery_id).where(RewardCode.delivery_id.is_not(None))
            ).all()
        )
        by_delivery = dict(session.execute(select(Delivery.id, Delivery.reward_code)).all())
    assert set(ledger) == set(sent_codes) and len(assigned) == 7
    assert all(by_delivery[d] == code for code, d in assigned.items())


def test_a_dry_pool_pauses_the_campaign_before_anybody_gets_an_email_without_a_code(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(BATCH_SIZE="10", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(5):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "small", ["ONE", "TWO", "THREE"])
    campaign_id = schedule(runtime, reward_campaign(tmp_path, 'pool = "small"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    messages = smtp_sink.take()
    assert sorted(code_in(m) for m in messages) == ["ONE", "THREE", "TWO"]
    with runtime.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign.status == CampaignStatus.PAUSED
        assert campaign.pause_reason.startswith("reward pool small ran dry")
        waiting = session.scalars(select(Delivery).where(Delivery.reward_code.is_(None))).all()
        assert len(waiting) == 2 and {d.state for d in waiting} == {DeliveryState.QUEUED}

    # more codes, resume: the two get theirs, nobody gets a second email
    load_pool(runtime, "small", ["FOUR", "FIVE"])
    with runtime.sessions() as session:
        scheduling.resume(session, session.get(Campaign, campaign_id))
        session.commit()
    run_engine(runtime, work)
    assert sorted(code_in(m) for m in smtp_sink.take()) == ["FIVE", "FOUR"]


def test_a_retried_batch_sends_the_same_code(make_app, make_subscriber, smtp_sink, work, tmp_path):
    """A batch that assigned codes then died (rows put back to queued) sends each row its first code."""
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "gift", ["A1", "A2", "A3", "A4", "A5", "A6"])
    campaign_id = schedule(runtime, reward_campaign(tmp_path, 'pool = "gift"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    first = {str(m["To"]): code_in(m) for m in smtp_sink.take()}
    assert len(set(first.values())) == 3
    # as if the relay's 250 was lost: the rows go back to queued and are sent again
    with runtime.sessions() as session:
        session.execute(update(Delivery).values(state=DeliveryState.QUEUED, sent_at=None, claim_token=None))
        session.execute(update(Campaign).values(status=CampaignStatus.SENDING))
        ids = session.scalars(select(Delivery.id)).all()
        session.commit()
        transport = make_transport(runtime.settings)
        try:
            report = batches.send_batch(
                session,
                runtime.redis,
                runtime.settings,
                transport,
                campaign_id,
                min(ids),
                max(ids),
                session.commit,
            )
        finally:
            transport.close()
    assert report.sent == 3
    again = {str(m["To"]): code_in(m) for m in smtp_sink.take()}
    assert again == first
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).where(RewardCode.delivery_id.is_not(None))) == 3


def test_generated_codes_are_sent_and_verified_by_the_api(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(API_TOKEN="store-token-0123456789", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(2):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    schedule(runtime, reward_campaign(tmp_path, 'prefix = "VIP"\nexpires_in = "30d"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    messages = smtp_sink.take()
    codes = [code_in(m) for m in messages]
    assert len(set(codes)) == 2 and all(c.startswith("VIP-") for c in codes)
    expires = (clock.now() + timedelta(days=30)).date()
    assert f"{expires.day} {expires:%B %Y}" in messages[0].get_body(("plain",)).get_content()

    client = app.test_client()
    auth = {"Authorization": "Bearer store-token-0123456789"}
    answer = client.get(f"/api/codes/verify?code={codes[0]}", headers=auth)
    assert answer.status_code == 200 and answer.json["status"] == "valid"
    altered = codes[0][:-1] + ("A" if codes[0][-1] != "A" else "B")
    assert client.get(f"/api/codes/verify?code={altered}", headers=auth).json["status"] == "unknown"
    assert client.get("/api/codes/verify?code=x").status_code == 401
    assert client.get("/api/codes/verify", headers=auth).status_code == 400
    clock.travel(timedelta(days=31))
    assert client.get(f"/api/codes/verify?code={codes[0]}", headers=auth).json["status"] == "expired"

    # the store reports a redemption: once, however often it says so
    for _ in range(2):
        answer = client.post("/api/codes/redeemed", json={"code": codes[0]}, headers=auth)
        assert answer.status_code == 200
    assert answer.json["status"] == "already redeemed"
    assert client.post("/api/codes/redeemed", json={"code": "NOPE"}, headers=auth).json["status"] == "unknown"
    assert client.post("/api/codes/redeemed", json={}, headers=auth).status_code == 400
    nested = b"[" * 100_000 + b"]" * 100_000  # json.loads would recurse past Python's limit: a 400, not a 500
    answer = client.post("/api/codes/redeemed", data=nested, content_type="application/json", headers=auth)
    assert answer.status_code == 400
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).where(Delivery.reward_redeemed_at.is_not(None))) == 1


def test_pool_redemption_is_idempotent_and_counted_in_the_report(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from newsletter.campaigns import report as campaign_report
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(API_TOKEN="store-token-0123456789", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(2):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "gift", ["G1", "G2", "G3"])
    campaign_id = schedule(runtime, reward_campaign(tmp_path, 'pool = "gift"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    code = code_in(smtp_sink.take()[0])
    client = app.test_client()
    auth = {"Authorization": "Bearer store-token-0123456789"}
    statuses = [
        client.post("/api/codes/redeemed", json={"code": code}, headers=auth).json["status"] for _ in range(3)
    ]
    assert statuses == ["redeemed", "already redeemed", "already redeemed"]
    # a pool code nobody was given is not a redemption
    assert client.post("/api/codes/redeemed", json={"code": "G3"}, headers=auth).json["status"] == "unknown"
    with runtime.sessions() as session:
        numbers = campaign_report.reward_counts(session, campaign_id)
    assert numbers == {"assigned": 2, "redeemed": 1}


def test_the_api_verifies_pool_codes_given_to_a_sent_message_until_redeemed(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(API_TOKEN="store-token-0123456789", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(3):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "gift", ["G1", "G2", "G3", "G4", "VIP-1-20300131-AAAAAAAAAAAAAAAA"])
    schedule(runtime, reward_campaign(tmp_path, 'pool = "gift"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    sent, uncertain, held_back = sorted(code_in(m) for m in smtp_sink.take())
    with runtime.sessions() as session:
        # one message maybe delivered (a worker died inside its SMTP transaction): its code counts
        session.execute(
            update(Delivery).where(Delivery.reward_code == uncertain).values(state=DeliveryState.UNCERTAIN)
        )
        # one whose message never left (queued again, say): nobody holds its code yet
        session.execute(
            update(Delivery).where(Delivery.reward_code == held_back).values(state=DeliveryState.QUEUED)
        )
        session.commit()

    client = app.test_client()
    auth = {"Authorization": "Bearer store-token-0123456789"}

    def verify(code: str):
        answer = client.get("/api/codes/verify", query_string={"code": code}, headers=auth)
        assert answer.status_code == 200, answer.data
        return answer.json

    assert verify(sent) == {"status": "valid", "expires": None}  # the shape of a generated code's answer
    assert verify(f"  {sent} ")["status"] == "valid"
    assert verify(uncertain)["status"] == "valid"
    assert verify(held_back)["status"] == "unknown"
    assert verify("G4")["status"] == "unknown"  # still free in the pool
    assert verify(sent.lower())["status"] == "unknown"  # pool codes are the store's text, exactly
    # a free pool code shaped like a generated one is still a pool code nobody was given
    assert verify("VIP-1-20300131-AAAAAAAAAAAAAAAA")["status"] == "unknown"
    assert verify("NOPE")["status"] == "unknown"
    assert verify("G\x001")["status"] == "unknown"  # a NUL byte: PostgreSQL takes no such text
    assert verify("X" * 201)["status"] == "unknown"
    assert client.get("/api/codes/verify", query_string={"code": sent}).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-000000"}
    assert client.get("/api/codes/verify", query_string={"code": sent}, headers=wrong).status_code == 403

    assert client.post("/api/codes/redeemed", json={"code": sent}, headers=auth).json["status"] == "redeemed"
    assert verify(sent) == {"status": "redeemed", "expires": None}
    assert verify(uncertain)["status"] == "valid"
    answer = client.post("/api/codes/redeemed", json={"code": "G\x001"}, headers=auth)
    assert answer.status_code == 200 and answer.json["status"] == "unknown"


def test_a_redeemed_generated_code_verifies_as_redeemed(make_app, make_subscriber, smtp_sink, work, tmp_path):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(API_TOKEN="store-token-0123456789", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    make_subscriber("p0@example.com", topics=("newsletter",))
    schedule(runtime, reward_campaign(tmp_path, 'prefix = "VIP"\nexpires_in = "30d"'))
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    code = code_in(smtp_sink.take()[0])
    client = app.test_client()
    auth = {"Authorization": "Bearer store-token-0123456789"}
    expires = (clock.now() + timedelta(days=30)).date().isoformat()
    answer = client.get(f"/api/codes/verify?code={code}", headers=auth).json
    assert answer == {"status": "valid", "expires": expires}
    answer = client.post("/api/codes/redeemed", json={"code": code.lower()}, headers=auth).json
    assert answer["status"] == "redeemed"
    answer = client.get(f"/api/codes/verify?code={code.lower()}", headers=auth).json
    assert answer == {"status": "redeemed", "expires": expires}


# --- [reward] in campaign.toml ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reward", "expected"),
    [
        ('pool = "Bad Name"', "8:8: pool must be a pool name (a-z, 0-9, - and _), got 'Bad Name'"),
        ('prefix = "vip"\nexpires_in = "30d"', "8:10: prefix must be 1 to 20 of A-Z and 0-9, got 'vip'"),
        ('prefix = "VIP"\nexpires_in = "30 days"', '9:14: expires_in must be a number of days like "30d"'),
        ('prefix = "VIP"', "7:1: missing required key 'expires_in' in [reward]"),
        (
            'pool = "gift"\nprefix = "VIP"',
            "8:8: [reward] takes either pool or prefix and expires_in, not both",
        ),
        ('pool = "gift"\ncolour = "red"', "9:1: unknown key 'colour' in [reward]"),
    ],
)
def test_a_bad_reward_table_is_reported_at_file_line_col(tmp_path, reward, expected):
    from newsletter.campaigns.validation import validate_campaign
    from tests.campaign_helpers import MJML, NOW, SITE, TOML, write_campaign

    folder = write_campaign(tmp_path, TOML + "\n[reward]\n" + reward + "\n", MJML)
    errors = [str(p) for p in validate_campaign(folder, SITE, NOW).errors]
    assert len(errors) == 1 and errors[0].startswith(f"{folder}/campaign.toml:{expected}"), errors


def test_the_reward_is_frozen_at_scheduling(runtime, tmp_path):
    from newsletter.campaigns.frozen import FrozenCampaign, FrozenReward
    from tests.sending_helpers import now_floor, write_campaign

    folder = write_campaign(
        tmp_path, waves=[("all", "all", now_floor() + timedelta(hours=1))], topic="newsletter"
    )
    (folder / "email.mjml").write_text(REWARD_MJML, "utf-8")
    with open(folder / "campaign.toml", "a", encoding="utf-8") as handle:
        handle.write('\n[reward]\nprefix = "VIP"\nexpires_in = "30d"\n')
    with runtime.sessions() as session:
        campaign = scheduling.schedule(session, runtime.settings, folder)
        session.commit()
        frozen = FrozenCampaign.of(campaign)
    assert frozen.reward == FrozenReward(prefix="VIP", expires_in_days=30)
    assert FrozenCampaign.from_json(frozen.to_json()) == frozen


def test_plan_shows_codes_needed_against_codes_available(app, runtime, make_subscriber, tmp_path):
    from tests.sending_helpers import now_floor, write_campaign

    for i in range(4):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "gift", ["G1", "G2", "G3"])
    folder = reward_campaign(tmp_path, 'pool = "gift"')
    app.config["CAMPAIGNS_DIR"] = str(tmp_path)
    result = CliRunner().invoke(cli, ["campaign", "plan", str(folder)], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert "reward codes: 4 needed, 3 free in pool gift: 1 SHORT, the campaign would pause" in result.output
    result = CliRunner().invoke(cli, ["campaign", "plan", str(folder), "--json"], env=env_for(app))
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["reward_codes"] == {"pool": "gift", "needed": 4, "available": 3, "short": 1}
    assert [w["audience"] for w in answer["waves"]] == [4]

    generated = reward_campaign(tmp_path, 'prefix = "VIP"\nexpires_in = "30d"', slug="vip-generated")
    result = CliRunner().invoke(cli, ["campaign", "plan", str(generated), "--json"], env=env_for(app))
    codes = json.loads(result.output)["reward_codes"]
    assert codes == {"pool": None, "needed": 4, "available": None, "short": 0}
    plain = write_campaign(
        tmp_path, waves=[("all", "all", now_floor() + timedelta(minutes=1))], topic="newsletter", slug="plain"
    )
    result = CliRunner().invoke(cli, ["campaign", "plan", str(plain), "--json"], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["reward_codes"] is None


def test_plan_of_a_campaign_paused_dry_counts_the_rows_still_without_a_code(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.sending_helpers import run_engine
    from tests.test_sending import schedule

    app = make_app(BATCH_SIZE="10", **NO_CAPS)
    runtime = app.extensions["newsletter"]
    for i in range(5):
        make_subscriber(f"p{i}@example.com", topics=("newsletter",))
    load_pool(runtime, "small", ["ONE", "TWO", "THREE"])
    folder = reward_campaign(tmp_path, 'pool = "small"')
    schedule(runtime, folder)
    clock.travel(timedelta(minutes=2))
    run_engine(runtime, work)
    assert len(smtp_sink.take()) == 3
    # every wave has started; the two queued rows the pool could not serve still need a code each
    result = CliRunner().invoke(cli, ["campaign", "plan", str(folder)], env=env_for(app))
    assert result.exit_code == 0, result.output
    assert "reward codes: 2 needed, 0 free in pool small: 2 SHORT, the campaign would pause" in result.output
    load_pool(runtime, "small", ["FOUR", "FIVE", "SIX"])
    result = CliRunner().invoke(cli, ["campaign", "plan", str(folder), "--json"], env=env_for(app))
    answer = json.loads(result.output)
    assert answer == {"waves": [], "reward_codes": {"pool": "small", "needed": 2, "available": 3, "short": 0}}


def test_a_reward_code_without_a_reward_table_is_an_error_naming_the_fix(tmp_path):
    """The example without its [reward]: the email's {{ reward.code }} is refused where it is written."""
    import shutil

    from newsletter.campaigns.validation import validate_campaign
    from tests.campaign_helpers import EXAMPLES, NOW, SITE

    folder = tmp_path / "vip-thank-you"
    shutil.copytree(EXAMPLES / "vip-thank-you", folder)
    toml = folder / "campaign.toml"
    toml.write_text(toml.read_text().replace('[reward]\npool = "vip-gift-2030"\n', ""))
    lines = (folder / "email.mjml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if "reward.code" in text)
    col = lines[line - 1].index("reward.code") + 1
    errors = [str(p) for p in validate_campaign(folder, SITE, NOW).errors]
    assert errors == [
        f"{folder}/email.mjml:{line}:{col}: 'reward' is empty: this campaign gives no codes; add a [reward] "
        'table to campaign.toml (pool = "NAME", or prefix = "VIP" and expires_in = "30d") or take reward.* '
        "out of the email"
    ]


def test_reward_in_the_text_part_and_a_guarded_reward(tmp_path):
    from newsletter.campaigns.validation import validate_campaign
    from tests.campaign_helpers import MJML, NOW, SITE, TOML, write_campaign

    footer = "{{ links.unsubscribe }} {{ store.postal_address }}\n"
    text = "Hi\n\nYour code: {{ reward.expires or 'soon' }}\n" + footer
    errors = validate_campaign(write_campaign(tmp_path / "a", TOML, MJML, text), SITE, NOW).errors
    assert [(p.file.rsplit("/", 1)[-1], p.line, p.col) for p in errors] == [("email.txt", 3, 15)]
    assert "add a [reward] table" in errors[0].message
    # an email that only prints the code when there is one is valid with or without [reward]
    guarded = MJML.replace("Hello", "{% if reward %}Code {{ reward.code }}{% endif %}Hello")
    assert validate_campaign(write_campaign(tmp_path / "b", TOML, guarded), SITE, NOW).ok
