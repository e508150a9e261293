"""Reward codes under crashes: real worker processes SIGKILLed mid-send, PostgreSQL, a pool of codes.

Reuses the chaos harness of tests/test_sending_crash.py (kills placed by the Nth message arriving,
never by sleeping); the campaign gets a ``[reward]`` pool and the relay records the code each
message carries.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy

import pytest
from sqlalchemy import create_engine, insert, select

from newsletter.core import clock
from newsletter.models import Delivery, DeliveryState, RewardCode, Subscriber
from tests import test_sending_crash as chaos
from tests.sending_helpers import write_campaign
from tests.test_reward_codes import REWARD_MJML

CODE = re.compile(r"your code: ([A-Z0-9-]+)")


class CodeRelay(chaos.KillingRelay):
    """The chaos relay, also keeping the reward codes each recipient's message carried."""

    def __init__(self, kill_at):
        super().__init__(kill_at)
        self.codes: list[tuple[str, set[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                message = message_from_bytes(envelope.original_content, policy=policy.default)
                self.codes.append((rcpt, set(CODE.findall(message.get_body(("plain",)).get_content()))))
        return await super().handle_DATA(server, session, envelope)


def reward_campaign(folder, **kwargs):
    target = write_campaign(folder, **kwargs)
    (target / "email.mjml").write_text(REWARD_MJML, "utf-8")
    with open(target / "campaign.toml", "a", encoding="utf-8") as handle:
        handle.write('\n[reward]\npool = "chaos"\n')
    return target


def load_codes(database_url: str, pool: str, codes: list[str]) -> None:
    """Codes into a pool, straight into the database (as `codes import` leaves them)."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(insert(RewardCode), [{"pool": pool, "code": c, "loaded_at": clock.now()} for c in codes])
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sigkilled_workers_hand_each_pool_code_once_and_each_person_one_code(
    make_app, database_url, tmp_path, smtp_sink, monkeypatch
):
    recipients, pool = 1000, 1200
    chaos.seed(database_url, {f"r{i}@example.com": ["newsletter"] for i in range(recipients)})
    load_codes(database_url, "chaos", [f"C{i:05}" for i in range(pool)])
    relays = []
    monkeypatch.setattr(chaos, "write_campaign", reward_campaign)
    monkeypatch.setattr(
        chaos, "KillingRelay", lambda kill_at: relays.append(CodeRelay(kill_at)) or relays[-1]
    )

    relay, runtime, kills = chaos.run_chaos(
        make_app, database_url, tmp_path, [("gift", "newsletter")], recipients, 4
    )

    assert relay is relays[0] and relay.kills_at == relay.planned, "every kill fell inside the send"
    bad = [(r, c) for r, c in relay.codes if len(c) != 1]
    assert not bad, f"messages without exactly one code: {len(bad)} {bad[:3]}"
    by_code: dict[str, set[str]] = {}
    for rcpt, codes in relay.codes:
        by_code.setdefault(next(iter(codes)), set()).add(rcpt)
    assert max(len(people) for people in by_code.values()) == 1, "one code went to two people"
    received = {}
    for rcpt, codes in relay.codes:
        received.setdefault(rcpt, set()).update(codes)
    assert max(len(codes) for codes in received.values()) == 1, "somebody got two codes"
    with runtime.sessions() as session:
        ledger = dict(
            session.execute(
                select(Subscriber.email, Delivery.reward_code)
                .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                .where(Delivery.state.in_([DeliveryState.SENT, DeliveryState.UNCERTAIN]))
            ).all()
        )
        assigned = dict(
            session.execute(
                select(RewardCode.delivery_id, RewardCode.code).where(RewardCode.delivery_id.is_not(None))
            ).all()
        )
        carried = dict(session.execute(select(Delivery.id, Delivery.reward_code)).all())
    assert len(ledger) == recipients and all(ledger.values())
    # an uncertain row (inside a killed SMTP transaction) is not sent again: at most one per slice killed
    assert len(received) >= recipients - kills * runtime.settings.send_connections
    # the code a person received is the one the ledger holds for them
    assert all(ledger[rcpt] == next(iter(codes)) for rcpt, codes in received.items())
    assert len(assigned) == recipients and all(carried[d] == code for d, code in assigned.items())
    print(f"kills at {relay.kills_at}, {len(received)} people, {len(assigned)} codes assigned")
