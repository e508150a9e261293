"""validate_campaign: every problem with its exact file, line and column (a fixed "now")."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from newsletter.campaigns.validation import validate_campaign
from tests.campaign_helpers import EXAMPLES, MJML, NOW, SITE, TOML, write_campaign

SALE_TOML = """\
name = "Sale"
subject = "Hi"
topic = "early-access"

[sale]
url = "https://shop.example/sale"
public_at = 2030-03-20T09:00:00+01:00
ends_at = 2030-03-31T23:00:00+01:00

[[wave]]
name = "vip"
audience = "tier == 'gold'"
send_at = 2030-03-16T09:00:00+01:00

[[wave]]
name = "everyone"
audience = "all"
send_at = 2030-03-18T09:00:00+01:00
"""


def problems(folder, warnings=False):
    report = validate_campaign(folder, SITE, NOW)
    found = report.warnings if warnings else report.errors
    return [(p.file.rsplit("/", 1)[-1], p.line, p.col, p.message) for p in found]


def only(folder, warnings=False):
    found = problems(folder, warnings)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("slug", ["spring-sale", "monthly-newsletter", "vip-thank-you"])
def test_the_examples_are_valid(slug):
    report = validate_campaign(EXAMPLES / slug, SITE, NOW)
    assert report.ok and not report.warnings, [str(p) for p in report.problems]
    assert report.campaign is not None and report.campaign.slug == slug


def test_problem_format_is_file_line_col_message(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace('topic = "newsletter"', 'topic = "newz"'))
    report = validate_campaign(folder, SITE, NOW)
    assert not report.ok
    assert [str(p) for p in report.errors] == [
        f"{folder}/campaign.toml:4:9: unknown topic 'newz' (known: newsletter, early-access, product-news)"
    ]


# --- campaign.toml -------------------------------------------------------------------------


def test_toml_syntax_error(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace('preheader = "A preheader"', 'preheader = "A preheader'))
    file, line, col, message = only(folder)
    assert (file, line) == ("campaign.toml", 3) and col > 1 and message.startswith("TOML: ")


def test_unknown_key_points_at_the_key(tmp_path):
    folder = write_campaign(tmp_path, TOML + 'colour = "red"\n')
    assert only(folder)[:3] == ("campaign.toml", 6, 1)
    assert "unknown key 'colour'" in only(folder)[3]


def test_unknown_key_in_a_wave(tmp_path):
    folder = write_campaign(
        tmp_path, SALE_TOML.replace('name = "everyone"', 'name = "everyone"\n  audiance = "x"')
    )
    assert only(folder)[:3] == ("campaign.toml", 17, 3)
    assert "unknown key 'audiance' in [[wave]]" in only(folder)[3]


def test_missing_required_key(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace('subject = "Hello {{ subscriber.first_name }}"\n', ""))
    assert only(folder) == ("campaign.toml", 1, 1, "missing required key 'subject'")


def test_time_without_offset(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace("2030-01-07T10:00:00+01:00", "2030-01-07T10:00:00"))
    assert only(folder)[:3] == ("campaign.toml", 5, 11)
    assert "needs a UTC offset" in only(folder)[3]


def test_send_at_next_to_waves(tmp_path):
    folder = write_campaign(
        tmp_path,
        SALE_TOML.replace('topic = "early-access"', 'topic = "early-access"\nsend_at = 2030-03-16T09:00:00Z'),
    )
    assert only(folder) == ("campaign.toml", 4, 11, "send_at belongs in each [[wave]] when waves are given")


def test_audience_error_points_inside_the_toml_line(tmp_path):
    folder = write_campaign(
        tmp_path, SALE_TOML.replace("tier == 'gold'", "tier == 'gold' or lifetime_value >> 5")
    )
    # audience = "tier == 'gold' or lifetime_value >> 5"
    # the expression starts at column 13; its second '>' is its 35th character: column 47
    assert only(folder) == ("campaign.toml", 12, 47, "audience: expected a value, found '>'")


def test_unknown_audience_field(tmp_path):
    folder = write_campaign(tmp_path, SALE_TOML.replace("tier == 'gold'", "teir == 'gold'"))
    file, line, col, message = only(folder)
    assert (file, line, col) == ("campaign.toml", 12, 13) and "unknown field 'teir'" in message


# --- times ---------------------------------------------------------------------------------


def test_send_at_in_the_past(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace("2030-01-07T10:00:00+01:00", "2026-11-23T11:00:00Z"))
    assert only(folder) == ("campaign.toml", 5, 11, "send_at is in the past (2026-11-23 11:00 UTC)")


def test_a_few_minutes_ago_still_counts_as_now(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace("2030-01-07T10:00:00+01:00", "2026-11-23T11:50:00Z"))
    assert problems(folder) == []


def test_waves_out_of_order(tmp_path):
    folder = write_campaign(
        tmp_path, SALE_TOML.replace("2030-03-18T09:00:00+01:00", "2030-03-15T09:00:00+01:00")
    )
    assert only(folder) == (
        "campaign.toml",
        18,
        11,
        "wave 'everyone' starts before the wave before it ('vip')",
    )


def test_wave_after_the_sale_is_public(tmp_path):
    folder = write_campaign(
        tmp_path, SALE_TOML.replace("2030-03-18T09:00:00+01:00", "2030-03-21T09:00:00+01:00")
    )
    file, line, col, message = only(folder)
    assert (file, line, col) == ("campaign.toml", 18, 11)
    assert message.startswith("wave 'everyone' starts after the sale is public (2030-03-20 08:00 UTC)")


def test_sale_ends_before_it_is_public(tmp_path):
    folder = write_campaign(
        tmp_path, SALE_TOML.replace("2030-03-31T23:00:00+01:00", "2030-03-19T23:00:00+01:00")
    )
    assert only(folder) == ("campaign.toml", 8, 11, "sale ends_at must be after public_at")


def test_deliver_by_before_send_at(tmp_path):
    folder = write_campaign(tmp_path, TOML + "deliver_by = 2030-01-07T08:00:00Z\n")
    assert only(folder) == ("campaign.toml", 6, 14, "deliver_by must be after the last send_at")


# --- templates -----------------------------------------------------------------------------


def test_jinja_syntax_error(tmp_path):
    folder = write_campaign(
        tmp_path, mjml=MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name }")
    )
    file, line, col, message = only(folder)
    assert (file, line, col) == ("email.mjml", 5, 45) and message.startswith("Jinja: ")  # the lone }


def test_undefined_variable(tmp_path):
    folder = write_campaign(tmp_path, mjml=MJML.replace("subscriber.first_name", "subscriber.last_name"))
    assert only(folder) == ("email.mjml", 5, 23, "'dict object' has no attribute 'last_name'")


def test_early_access_link_needs_a_sale(tmp_path):
    folder = write_campaign(tmp_path, mjml=MJML.replace("subscriber.first_name", "links.early_access"))
    assert only(folder) == ("email.mjml", 5, 23, "'dict object' has no attribute 'early_access'")


def test_subject_template_error_points_at_the_subject(tmp_path):
    folder = write_campaign(tmp_path, TOML.replace("subscriber.first_name", "subscriber.nickname"))
    assert only(folder) == ("campaign.toml", 2, 21, "'dict object' has no attribute 'nickname'")


@pytest.mark.parametrize(
    "expression, message",
    [
        (
            "''.__class__.__mro__",
            "not allowed in a campaign: access to attribute '__class__' of 'str' object is unsafe.",
        ),
        ("campaign.__class__.__init__.__globals__", "not allowed in a campaign"),
        ("sale.public_at.__class__", "not allowed in a campaign"),
        ("store.items.__self__", "not allowed in a campaign"),
        ("config", "'config' is undefined"),
        ("self.__init__.__globals__", "not allowed in a campaign"),
        ("cycler.__init__.__globals__.os", "not allowed in a campaign"),
        ("lipsum.__globals__", "not allowed in a campaign"),
    ],
)
def test_sandbox_escapes_fail_safely(tmp_path, expression, message):
    mjml = MJML.replace("{{ subscriber.first_name }}", "{{ " + expression + " }}")
    folder = write_campaign(tmp_path, mjml=mjml.replace("{% block content %}", "{% block content %}\n"))
    file, line, col, found = only(folder)
    assert (file, line) == ("email.mjml", 6)
    assert 23 <= col < 23 + len(expression)  # inside the expression, at the token the error names
    assert found.startswith(message)


def test_mutating_a_list_is_refused(tmp_path):
    mjml = MJML.replace("{{ subscriber.first_name }}", "{% set l = [1] %}{{ l.append(2) }}")
    file, line, col, message = only(write_campaign(tmp_path, mjml=mjml))
    assert (file, line) == ("email.mjml", 5) and "not allowed in a campaign" in message


def test_personal_values_cannot_be_tested(tmp_path):
    mjml = MJML.replace("{{ subscriber.first_name }}", "{% if subscriber.first_name %}x{% endif %}")
    file, line, col, message = only(write_campaign(tmp_path, mjml=mjml))
    assert (file, line) == ("email.mjml", 5) and "only known when sending" in message


def test_filters_that_change_personal_values_are_refused(tmp_path):
    mjml = MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.first_name|upper }}")
    file, line, col, message = only(write_campaign(tmp_path, mjml=mjml))
    assert (file, line, col) == ("email.mjml", 1, 1) and "changed by a filter" in message


def test_unknown_mjml_tag(tmp_path):
    folder = write_campaign(
        tmp_path, mjml=MJML.replace("<mj-column>", "<mj-colum>").replace("</mj-column>", "</mj-colum>")
    )
    assert only(folder) == ("email.mjml", 4, 3, "unknown MJML tag <mj-colum>")


def test_mjml_that_does_not_parse(tmp_path):
    folder = write_campaign(tmp_path, mjml=MJML.replace("Hello", "a < b"))
    file, line, col, message = only(folder)
    assert (file, line, col) == ("email.mjml", 1, 1) and message.startswith("MJML: ")


def test_a_campaign_that_drops_the_footer_fails(tmp_path):
    mjml = "<mjml><mj-body><mj-section><mj-column><mj-text>Buy!</mj-text>"
    mjml += "</mj-column></mj-section></mj-body></mjml>"
    found = problems(write_campaign(tmp_path, mjml=mjml))
    assert ("email.mjml", 1, 1) == found[0][:3] and "the footer is missing" in found[0][3]


def test_a_text_override_must_carry_the_unsubscribe_link(tmp_path):
    folder = write_campaign(tmp_path, text="Hello {{ subscriber.first_name }}\n")
    file, line, col, message = only(folder)
    assert (file, line, col) == ("email.txt", 1, 1) and "{{ links.unsubscribe }}" in message


def test_a_good_text_override_is_used(tmp_path):
    text = (
        "Hi {{ subscriber.first_name }}\nUnsubscribe: {{ links.unsubscribe }}\n{{ store.postal_address }}\n"
    )
    report = validate_campaign(write_campaign(tmp_path, text=text), SITE, NOW)
    assert report.ok and report.emails[None].text.startswith("Hi ~NL~first_name~text~\nUnsubscribe:")


# --- the footer must be seen ----------------------------------------------------------------

#: a campaign whose head block styles the page; the footer's parts are the base template's
HEAD_MJML = """\
{% extends "base.mjml" %}
{% block head %}
<mj-style>
  STYLE
</mj-style>
{% endblock %}
{% block content %}
<mj-section>
  <mj-column>
    <mj-text>Hello {{ subscriber.first_name }}</mj-text>
  </mj-column>
</mj-section>
{% endblock %}
"""
TEXT_NEEDS = "{{ links.unsubscribe }} and {{ store.postal_address }}"
ALL_THREE = ("unsubscribe link", "preferences link", "postal address")


def hidden_parts(folder):
    """(line, col, part, reason) of every 'hidden' error."""
    found = []
    for file, line, col, message in problems(folder):
        match = re.fullmatch(r"the footer's (.+?) is hidden: (.+); every reader must see it", message)
        assert match and file == "email.mjml", message
        found.append((line, col, match.group(1), match.group(2)))
    return found


def test_a_footer_hidden_by_css_in_the_head_block_fails(tmp_path):
    style = "a { display: none } td div { display: none !important }"
    folder = write_campaign(tmp_path, mjml=HEAD_MJML.replace("STYLE", style))
    # the text part (made from the HTML) loses the hidden link too; the HTML's errors point at the CSS
    hidden = "the footer's {} is hidden: display:none on {}; every reader must see it"
    assert problems(folder) == [
        ("email.mjml", 4, 7, hidden.format("unsubscribe link", "<a>")),
        ("email.mjml", 4, 7, hidden.format("preferences link", "<a>")),
        ("email.mjml", 4, 7, hidden.format("postal address", "<div>")),
        ("email.mjml", 1, 1, f"the plain text must carry {TEXT_NEEDS}"),
    ]


@pytest.mark.parametrize(
    "style, where, parts, reason",
    [
        ("a { visibility: hidden }", (4, 7), ALL_THREE[:2], "visibility:hidden on <a>"),
        ("td div { opacity: 0.05 }", (4, 12), ALL_THREE, "opacity:0.05 on <div>"),
        ("td div { font-size: 0 !important }", (4, 12), ALL_THREE, "font-size:0 on <div>"),
        ("td div { font: 0/0 a !important }", (2, 1), ALL_THREE, "font-size:0 on <div>"),  # the head block
        ("td { height: 0; overflow: hidden }", (4, 8), ALL_THREE, "height:0 with overflow:hidden on <td>"),
        ("a { color: #f4f4f4 !important }", (4, 14), ALL_THREE[:2],
         "its text colour equals its background (#f4f4f4 on #f4f4f4)"),
        ("td div { color: WHITE !important } body, div { background: #fff !important }", (4, 62),
         ALL_THREE[2:], "its text colour equals its background (#ffffff on #ffffff)"),
        ("a { mso-hide: all }", (4, 7), ALL_THREE[:2], "mso-hide:all on <a>"),
        # premailer leaves media queries and :link in <style>; clients apply them
        ("@media screen { a { display: none !important } }", (4, 23), ALL_THREE[:2],
         "display:none on <a> (in @media screen)"),
        ("a:link { visibility: hidden !important }", (4, 12), ALL_THREE[:2], "visibility:hidden on <a>"),
    ],
)  # fmt: skip
def test_every_way_of_hiding_the_footer_fails(tmp_path, style, where, parts, reason):
    folder = write_campaign(tmp_path, mjml=HEAD_MJML.replace("STYLE", style))
    assert hidden_parts(folder) == [(*where, part, reason) for part in parts]


def test_a_footer_coloured_like_its_section_fails(tmp_path):
    mjml = HEAD_MJML.replace(
        "<mj-style>\n  STYLE\n</mj-style>",
        '<mj-attributes><mj-section background-color="#666666" /></mj-attributes>',
    )
    assert hidden_parts(write_campaign(tmp_path, mjml=mjml)) == [
        (3, 46, part, "its text colour equals its background (#666666 on #666666)") for part in ALL_THREE
    ]  # fmt: skip


@pytest.mark.parametrize(
    "style",
    [
        "a { color: #1a7f37 !important; text-decoration: underline }",
        "a:hover { display: none }",  # only under the pointer
        "td div { font-size: 0 } td div div, td div a { font-size: 13px }",
        "@media (prefers-color-scheme: dark) { body, div { background: #222 !important } }",
        ".preheader { display: none }",
    ],
)
def test_a_footer_styled_but_visible_passes(tmp_path, style):
    assert problems(write_campaign(tmp_path, mjml=HEAD_MJML.replace("STYLE", style))) == []


def test_a_hidden_copy_is_fine_when_the_footer_shows(tmp_path):
    extra = (
        '<mj-text><div style="display:none">{{ store.postal_address }} '
        '<a href="{{ links.unsubscribe }}">x</a></div></mj-text>'
    )
    mjml = MJML.replace("<mj-text>Hello", f"{extra}\n    <mj-text>Hello")
    assert problems(write_campaign(tmp_path, mjml=mjml)) == []


# --- URLs ----------------------------------------------------------------------------------


def test_relative_urls_are_refused_where_they_are_written(tmp_path):
    content = """\
    <mj-image src="images/hero.png" alt="Hero" />
    <mj-button href="/sale">Shop</mj-button>
    <mj-text><a href="{{ 'sale.html' }}">sale</a> <a href="{{ campaign.slug }}/offer">offer</a></mj-text>
    <mj-text>Hello {{ subscriber.first_name }}</mj-text>"""
    mjml = MJML.replace("    <mj-text>Hello {{ subscriber.first_name }}</mj-text>", content)
    tail = "mail clients cannot resolve it (use https://..., mailto: or tel:)"
    assert problems(write_campaign(tmp_path, mjml=mjml)) == [
        ("email.mjml", 5, 20, f"not an absolute URL in src: 'images/hero.png'; {tail}"),
        ("email.mjml", 6, 22, f"not an absolute URL in href: '/sale'; {tail}"),
        ("email.mjml", 7, 27, f"not an absolute URL in href: 'sale.html'; {tail}"),
        ("email.mjml", 1, 1, f"not an absolute URL in href: 'c/offer'; {tail}"),  # made by Jinja
    ]


def test_absolute_urls_anchors_and_personal_links_pass(tmp_path):
    links = (
        '<a href="https://shop.example/a?b=1&amp;c=2">a</a> <a href="mailto:help@store.example">m</a> '
        '<a href="tel:+4412345">t</a> <a href="#top">top</a> '
        '<a href="https://shop.example/?e={{ subscriber.email }}">q</a> '
        '<a href="{{ links.preferences }}">p</a>'
    )
    mjml = MJML.replace("{{ subscriber.first_name }}", links)
    assert problems(write_campaign(tmp_path, mjml=mjml)) == []


# --- text encodings and one-line strings ---------------------------------------------------


@pytest.mark.parametrize("name", ["email.mjml", "campaign.toml", "email.txt"])
def test_a_file_that_is_not_utf8_is_located_at_its_first_bad_byte(tmp_path, name):
    folder = write_campaign(tmp_path, text="Hi\n{{ links.unsubscribe }}\n{{ store.postal_address }}\n")
    path = folder / name
    text = path.read_text("utf-8").splitlines(keepends=True)
    text[1] = "Café " + text[1]  # line 2, column 4 is the é
    path.write_bytes("".join(text).encode("latin-1"))
    report = validate_campaign(folder, SITE, NOW)
    assert [str(p) for p in report.errors] == [f"{path}:2:4: not UTF-8 (byte 0xE9)"]


@pytest.mark.parametrize(
    "written, shown",
    [
        ("\\n", "U+000A (line feed)"),
        ("\\r", "U+000D (carriage return)"),
        ("\\t", "U+0009 (tab)"),
        ("\\u0085", "U+0085 (control character)"),
        ("\\u2028", "U+2028 (line separator)"),
        ("\\u2029", "U+2029 (paragraph separator)"),
    ],
)
def test_control_characters_in_header_strings_are_refused(tmp_path, written, shown):
    toml = TOML.replace("Hello {{", f"Hello{written}Bcc: x@example.com {{{{")
    toml = toml.replace("A preheader", f"A{written}preheader").replace(
        "Test campaign", f"Test{written}campaign"
    )
    assert problems(write_campaign(tmp_path, toml)) == [
        ("campaign.toml", 1, 8, f"name must be one line of text: it contains {shown}"),
        ("campaign.toml", 2, 11, f"subject must be one line of text: it contains {shown}"),
        ("campaign.toml", 3, 13, f"preheader must be one line of text: it contains {shown}"),
    ]


def test_a_subject_that_renders_a_line_break_is_refused(tmp_path):
    folder = write_campaign(
        tmp_path, TOML.replace("Hello {{ subscriber.first_name }}", "News from {{ store.name }}")
    )
    report = validate_campaign(folder, replace(SITE, store_name="Our\nstore"), NOW)
    assert [str(p) for p in report.errors] == [
        f"{folder}/campaign.toml:2:11: subject renders to text with U+000A (line feed); it must be one line"
    ]


# --- warnings ------------------------------------------------------------------------------


def test_long_subject_is_a_warning(tmp_path):
    folder = write_campaign(
        tmp_path, TOML.replace("Hello {{", "Hello, this subject goes on and on about the big spring sale, {{")
    )
    assert problems(folder) == []
    file, line, col, message = only(folder, warnings=True)
    assert (file, line, col) == ("campaign.toml", 2, 11) and message.startswith("subject is 66 characters")


def test_images_without_alt_and_over_http_are_warnings(tmp_path):
    image = '<mj-image src="http://shop.example/a.png" />'
    folder = write_campaign(tmp_path, mjml=MJML.replace("<mj-text>", f"{image}\n    <mj-text>"))
    assert problems(folder) == []
    assert problems(folder, warnings=True) == [
        ("email.mjml", 5, 5, "image without alt text"),
        ("email.mjml", 5, 20, "remote image over plain http (use https): http://shop.example/a.png"),
    ]


def test_html_over_gmails_clipping_limit_is_a_warning(tmp_path):
    filler = "<mj-text>" + "Lorem ipsum dolor sit amet. " * 40 + "</mj-text>\n"
    folder = write_campaign(tmp_path, mjml=MJML.replace("<mj-text>", filler * 100 + "<mj-text>", 1))
    assert problems(folder) == []
    file, line, col, message = only(folder, warnings=True)
    assert (file, line, col) == ("email.mjml", 1, 1) and "Gmail clips messages over 102 KB" in message


# --- shapes the scheduler relies on --------------------------------------------------------


def test_waves_with_the_same_email_share_one_render(tmp_path):
    toml = SALE_TOML.replace('subject = "Hi"', "subject = \"Hi {{ subscriber.first_name or 'there' }}\"")
    report = validate_campaign(write_campaign(tmp_path, toml), SITE, NOW)
    assert report.ok and list(report.emails) == [None]
    assert [w.name for w in report.campaign.waves] == ["vip", "everyone"]
    assert report.campaign.sale.public_at.isoformat() == "2030-03-20T08:00:00"  # naive UTC


def test_waves_with_different_content_get_their_own_email(tmp_path):
    mjml = MJML.replace("Hello", "{{ wave.name }}:")
    report = validate_campaign(write_campaign(tmp_path, SALE_TOML, mjml), SITE, NOW)
    assert report.ok and set(report.emails) == {"vip", "everyone"}
    assert "vip:" in report.emails["vip"].html and "everyone:" in report.emails["everyone"].html


def test_broken_folders_never_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    assert only(tmp_path / "empty")[3] == "missing campaign.toml"
    bad = write_campaign(tmp_path, "\x00\x01", slug="binary")
    assert not validate_campaign(bad, SITE, NOW).ok
    (bad / "campaign.toml").write_bytes(b"\xff\xfe")
    assert not validate_campaign(bad, SITE, NOW).ok


def test_the_folder_name_must_be_a_slug(tmp_path):
    folder = write_campaign(tmp_path, slug="Spring Sale")
    assert only(folder) == (
        "campaign.toml",
        1,
        1,
        "the folder name is the campaign's slug: use a-z, 0-9 and -",
    )


def test_from_must_be_one_address_on_one_line(tmp_path):
    folder = write_campaign(tmp_path, TOML + 'from = "Store <news@store.example>\\nBcc: x@example.com"\n')
    assert only(folder) == (
        "campaign.toml",
        6,
        8,
        "from must be one line of text: it contains U+000A (line feed)",
    )
    folder = write_campaign(tmp_path, TOML + 'from = "Store"\n', slug="d")
    assert only(folder)[:3] == ("campaign.toml", 6, 8)


# --- [email]: background and width -------------------------------------------------------------


def test_email_background_and_width_reach_the_body(tmp_path):
    folder = write_campaign(tmp_path, TOML + '[email]\nbackground = "#112233"\nwidth = 640\n')
    report = validate_campaign(folder, SITE, NOW)
    assert report.ok, report.problems
    html = report.emails[None].html
    body = re.search(r"<body[^>]*>", html).group()
    assert 'bgcolor="#112233"' in body and "background-color:#123" in body  # premailer shortens it
    assert "max-width:640px" in html.replace(" ", "") and "max-width:600px" not in html.replace(" ", "")


def test_without_email_table_the_body_is_the_base_layouts(tmp_path):
    html = validate_campaign(write_campaign(tmp_path), SITE, NOW).emails[None].html.replace(" ", "")
    assert "background-color:#f4f4f4" in html and "max-width:600px" in html


@pytest.mark.parametrize(
    "table, expected",
    [
        ('background = "blue; x"', (7, 14, "background must be a colour like \"#f4f4f4\", got 'blue; x'")),
        (
            "width = 5000",
            (7, 9, "width must be a number of pixels from 320 to 800 (without quotes or px), got 5000"),
        ),
        (
            'width = "640px"',
            (7, 9, "width must be a number of pixels from 320 to 800 (without quotes or px), got '640px'"),
        ),
        ("colour = 1", (7, 1, "unknown key 'colour' in [email] (known: background, width)")),
    ],
)
def test_email_table_is_checked(tmp_path, table, expected):
    folder = write_campaign(tmp_path, TOML + f"[email]\n{table}\n")
    assert only(folder) == ("campaign.toml", *expected)


def test_an_own_mj_body_is_a_warning_that_names_the_email_table(tmp_path):
    mjml = MJML.replace("<mj-section>", '<mj-body background-color="#000000"><mj-section>', 1)
    folder = write_campaign(tmp_path, mjml=mjml)
    file, line, col, message = only(folder, warnings=True)
    assert (file, line, col) == ("email.mjml", 3, 1) and "[email] background" in message
