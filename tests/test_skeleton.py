"""Per-recipient personalisation: complete RFC 5322 messages from a skeleton encoded once."""

from __future__ import annotations

import binascii
import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.campaigns.messages import campaign_headers
from newsletter.campaigns.validation import validate_campaign
from newsletter.mail.message import HeaderInjection
from newsletter.mail.skeleton import build_skeleton, personalise, slot_token
from tests.campaign_helpers import EXAMPLES, NOW, SITE

VALUES = {
    "first_name": "Zoë <b>&",
    "email": "zoe+news@example.com",
    "unsubscribe_url": "https://newsletter.test/unsubscribe/abc.def?t=early-access&x=1",
    "preferences_url": "https://newsletter.test/preferences/ghi.jkl",
    "early_access_url": "https://newsletter.test/early-access/mno.pqr",
}


def spring_sale():
    report = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    assert report.ok, [str(p) for p in report.problems]
    return report


def skeleton_for(report, wave="vip"):
    rendered = report.emails[wave]
    return build_skeleton(
        sender=SITE.sender,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        slots={token: tuple(list(slot)) for token, slot in rendered.slots.items()},  # as after JSON
        headers=campaign_headers(report.campaign, SITE, wave),
    )


def test_personalised_message_parses_with_values_in_both_parts_and_headers():
    skeleton = skeleton_for(spring_sale())
    data = personalise(skeleton, "zoe+news@example.com", VALUES, message_id="<1.abc@store.example>")
    message = email.message_from_bytes(data, policy=email.policy.default)

    assert message["To"] == "zoe+news@example.com"
    assert message["Message-ID"] == "<1.abc@store.example>"
    assert message["Subject"] == "Early access to the spring sale for Zoë <b>&"
    assert message["List-Unsubscribe"] == f"<{VALUES['unsubscribe_url']}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Our store Early access <early-access.store.example>"
    assert message["Precedence"] == "bulk"
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"

    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hello Zoë <b>&," in text
    assert VALUES["early_access_url"] in text and VALUES["unsubscribe_url"] in text
    # HTML context: escaped, never markup
    assert "Hello Zoë &lt;b&gt;&amp;," in html and "<b>&" not in html
    assert f'href="{VALUES["unsubscribe_url"].replace("&", "&amp;")}"' in html
    assert f'href="{VALUES["early_access_url"]}"' in html
    assert f'href="{VALUES["preferences_url"]}"' in html
    assert "~NL~" not in text + html + str(message)


def test_every_line_is_crlf_and_at_most_998_octets():
    skeleton = skeleton_for(spring_sale())
    long_values = {**VALUES, "first_name": "A" * 3000, "unsubscribe_url": "https://n.test/u/" + "x" * 900}
    data = personalise(skeleton, "a@example.com", long_values, message_id="<2@store.example>")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert "A" * 3000 in parsed.get_body(("plain",)).get_content()


def test_non_ascii_subject_and_sender_are_rfc2047_encoded():
    skeleton = build_skeleton(
        sender="Café Störe <news@store.example>",
        subject=f"Grüße, {slot_token('first_name', 'header')}",
        text="t",
        html="<p>h</p>",
        slots={},
        headers={},
    )
    data = personalise(skeleton, "a@example.com", {"first_name": "Jürgen"}, message_id="<3@store.example>")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"=?utf-8?" in head
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == "Grüße, Jürgen"
    assert parsed["From"].addresses[0].display_name == "Café Störe"


@pytest.mark.parametrize(
    "to, values",
    [
        ("a@example.com\r\nBcc: victim@example.com", {"first_name": "x"}),
        ("a@example.com", {"first_name": "x\nBcc: victim@example.com"}),
        ("a@example.com", {"first_name": "=?UTF-8?Q?=0ABcc:_victim@example.com?="}),
    ],
)
def test_header_injection_is_refused(to, values):
    skeleton = build_skeleton(
        sender=SITE.sender,
        subject=f"Hi {slot_token('first_name', 'header')}",
        text="t",
        html="h",
        slots={},
        headers={},
    )
    with pytest.raises(HeaderInjection):
        personalise(skeleton, to, {"first_name": "x", **values}, message_id="<4@store.example>")


def test_injection_in_static_headers_is_refused_when_building():
    with pytest.raises(HeaderInjection):
        build_skeleton(sender=SITE.sender, subject="a\r\nBcc: x@y", text="t", html="h", slots={}, headers={})


def test_a_missing_value_is_an_error_not_a_leaked_token():
    skeleton = skeleton_for(spring_sale())
    with pytest.raises(ValueError, match="early_access_url"):
        personalise(
            skeleton,
            "a@example.com",
            {k: v for k, v in VALUES.items() if k != "early_access_url"},
            message_id="<5@x>",
        )


def test_empty_values_take_the_templates_fallback():
    skeleton = skeleton_for(spring_sale())
    data = personalise(
        skeleton, "a@example.com", {**VALUES, "first_name": ""}, message_id="<6@store.example>"
    )
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "Early access to the spring sale for you"
    assert "Hello there," in message.get_body(("plain",)).get_content()
    assert "Hello there," in message.get_body(("html",)).get_content()


@settings(max_examples=300, deadline=None)
@given(
    static=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), min_size=2),
    names=st.lists(st.text(max_size=120), min_size=1),
)
def test_quoted_printable_pieces_decode_to_exactly_the_filled_text(static, names):
    """Static pieces encoded once + values encoded per message == the text with values in place."""
    static = [s.replace("\r", "").replace("\n", "\r\n").replace("~", "-") for s in static]
    token = slot_token("first_name", "text")
    template = token.join(static)
    skeleton = build_skeleton(sender=SITE.sender, subject="s", text=template, html="h", slots={}, headers={})
    for name in names:
        data = personalise(skeleton, "a@example.com", {"first_name": name}, message_id="<7@x>")
        body = data.split(b"quoted-printable\r\n\r\n", 1)[1].split(b"\r\n--=_nl_", 1)[0]
        assert all(len(line) <= 76 for line in body.split(b"\r\n"))
        expected = template.replace(token, (name or "").replace("\r", " ").replace("\n", " "))
        assert binascii.a2b_qp(body).decode("utf-8") == expected


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=300))
def test_personal_subjects_round_trip_through_rfc2047(name):
    skeleton = build_skeleton(
        sender=SITE.sender,
        subject=f"Für {slot_token('first_name', 'header')}",
        text="t",
        html="h",
        slots={},
        headers={},
    )
    data = personalise(skeleton, "a@example.com", {"first_name": name}, message_id="<8@x>")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and max(len(line) for line in head.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["Subject"]) == f"Für {name}"


@pytest.mark.parametrize(
    "name", ["=?utf-8?b?SGFja2Vk?=", "Bob =?UTF-8?Q?Hacked?= Smith", "=?iso-8859-1?q?Caf=E9?="]
)
def test_a_value_that_looks_like_an_encoded_word_arrives_as_the_literal_text(name):
    skeleton = build_skeleton(
        sender=SITE.sender,
        subject=f"Hi {slot_token('first_name', 'header')}",
        text="t",
        html="h",
        slots={},
        headers={},
    )
    data = personalise(skeleton, "a@example.com", {"first_name": name}, message_id="<9@x>")
    head = data.split(b"\r\n\r\n", 1)[0]
    assert name.encode() not in head  # a reader would decode it into what it hides
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["Subject"]) == f"Hi {name}"
