"""Campaign variants per language: ``[variant.<lang>]`` and ``email.<lang>.mjml``, checked, frozen,
previewed and sent to each person in their language (real SMTP on loopback, SQLite and PostgreSQL)."""

from __future__ import annotations

import email
import email.policy
import re
import textwrap
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from newsletter.campaigns.frozen import FrozenCampaign
from newsletter.campaigns.preview import write_preview
from newsletter.campaigns.validation import sample_values, validate_campaign
from newsletter.core import clock
from newsletter.models import Campaign, Delivery, DeliveryState, Subscriber
from tests.campaign_helpers import EXAMPLES, MJML, NOW, SITE, TOML, write_campaign
from tests.sending_helpers import now_floor, run_engine
from tests.sending_helpers import write_campaign as write_sale
from tests.test_campaign_cli import run
from tests.test_sending import NO_CAPS, schedule

GERMAN_TABLE = """
[variant.de]
subject = "Hallo {{ subscriber.first_name or 'Sie' }}"
preheader = "Ein Vorspann"
"""
GERMAN_MJML = MJML.replace("Hello", "Guten Tag")


def with_variant(
    tmp_path: Path, toml: str = TOML + GERMAN_TABLE, mjml_de: str = GERMAN_MJML, **files
) -> Path:
    """The helpers' campaign plus email.de.mjml (and any other ``name=text`` files)."""
    folder = write_campaign(tmp_path, toml)
    (folder / "email.de.mjml").write_text(textwrap.dedent(mjml_de), "utf-8")
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text, "utf-8")
    return folder


def problems_of(folder: Path) -> list[str]:
    """The report's problems as ``validate`` prints them, the folder's path cut off."""
    report = validate_campaign(folder, SITE, NOW)
    return [str(p).removeprefix(f"{folder}/") for p in report.problems]


# --- validation ------------------------------------------------------------------------------------


def test_a_variant_renders_with_its_subject_footer_and_lang(tmp_path):
    site = replace(SITE, topic_translations={"newsletter": {"de": "Rundbrief"}})
    report = validate_campaign(with_variant(tmp_path), site, NOW)
    assert report.ok and report.problems == []
    assert report.languages == ["en", "de"]
    english, german = report.emails[None], report.variants["de"][None]
    assert english.subject == "Hello ~NL~first_name~header~"
    assert german.subject == "Hallo ~NL~first_name.536965~header~"
    assert "Guten Tag" in german.html and "Guten Tag" not in english.html
    # base.mjml's footer in the variant's language, and the document says which language it is
    assert (
        "Abmelden" in german.html and "E-Mail-Einstellungen" in german.html and "Ein Vorspann" in german.html
    )
    assert "Unsubscribe" in english.html and "Abmelden" not in english.html
    assert '<html lang="de"' in german.html and '<html lang="en"' in english.html
    assert "Sie erhalten diese E-Mail" in german.text
    # the topic's label in the footer is the German one the store gave it (topics rename --language)
    assert "Rundbrief" in german.html and "Rundbrief" not in english.html and "Newsletter" in english.html


def test_a_broken_german_email_is_reported_at_its_file_line_and_column(tmp_path):
    broken = GERMAN_MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.shoe_size }}")
    folder = with_variant(tmp_path, mjml_de=broken)
    report = validate_campaign(folder, SITE, NOW)
    assert [str(p).removeprefix(f"{folder}/") for p in report.errors] == [
        "email.de.mjml:5:27: 'dict object' has no attribute 'shoe_size'"
    ]
    assert report.emails  # the default email still renders: one broken variant does not hide the others

    syntax = with_variant(tmp_path / "syntax", mjml_de=GERMAN_MJML.replace("{% endblock %}", ""))
    assert [p for p in problems_of(syntax) if p.startswith("email.de.mjml")] == [
        "email.de.mjml:2:1: Jinja: Unexpected end of template. Jinja was looking for the following tags: "
        "'endblock'. The innermost block that needs to be closed is 'block'."
    ]
    tag = with_variant(tmp_path / "tag", mjml_de=GERMAN_MJML.replace("<mj-text>", "<mj-txt>"))
    assert problems_of(tag) == ["email.de.mjml:5:5: unknown MJML tag <mj-txt>"]


def test_a_german_subject_with_a_jinja_error_points_into_its_table(tmp_path):
    toml = TOML + GERMAN_TABLE.replace("{{ subscriber.first_name or 'Sie' }}", "{{ subscriber.age }}")
    assert problems_of(with_variant(tmp_path, toml)) == [
        "campaign.toml:8:21: 'dict object' has no attribute 'age'"
    ]


def test_unknown_language_codes_are_located(tmp_path):
    toml = TOML + '\n[variant.xx]\nsubject = "?"\n'
    folder = with_variant(tmp_path, toml, **{"email_it_mjml": MJML, "email_zz_txt": "text"})
    no_german_subject = [
        "email.de.mjml:1:1: warning: no subject for de ([variant.de] subject = ... in campaign.toml): "
        "its readers get the en one",
        "email.de.mjml:1:1: warning: no preheader for de ([variant.de] preheader = ... in campaign.toml): "
        "its readers get the en one",
    ]
    assert problems_of(folder) == [
        "campaign.toml:7:10: unknown language 'xx' in [variant.xx] (shipped: de, fr)",
        *no_german_subject,
        "email.it.mjml:1:1: unknown language 'it' in the file name (shipped: en, de, fr)",
        "email.zz.txt:1:1: unknown language 'zz' in the file name (shipped: en, de, fr)",
    ]
    assert not validate_campaign(folder, SITE, NOW).ok
    language = write_campaign(tmp_path / "lang", 'language = "klingon"\n' + TOML)
    assert problems_of(language) == ["campaign.toml:1:12: unknown language 'klingon' (shipped: en, de, fr)"]


def test_a_variant_without_its_email_or_subject(tmp_path):
    no_email = write_campaign(tmp_path / "a", TOML + GERMAN_TABLE)
    assert problems_of(no_email) == [
        "campaign.toml:7:10: [variant.de] has no email.de.mjml beside campaign.toml"
    ]

    no_subject = with_variant(tmp_path / "b", TOML)  # email.de.mjml, no [variant.de]
    assert problems_of(no_subject) == [
        "email.de.mjml:1:1: warning: no subject for de ([variant.de] subject = ... in campaign.toml): "
        "its readers get the en one",
        "email.de.mjml:1:1: warning: no preheader for de ([variant.de] preheader = ... in campaign.toml): "
        "its readers get the en one",
    ]
    report = validate_campaign(no_subject, SITE, NOW)
    assert report.ok and report.variants["de"][None].subject == "Hello ~NL~first_name~header~"

    same = with_variant(tmp_path / "c", TOML + GERMAN_TABLE, **{"email_en_mjml": MJML})
    assert problems_of(same) == [
        "email.en.mjml:1:1: email.mjml is already the en email (campaign.toml language = 'en'): "
        "remove email.en.mjml or set language to the one email.mjml is written in"
    ]


def test_a_german_default_with_an_english_variant(tmp_path):
    toml = 'language = "de"\n' + TOML.replace("Hello", "Hallo") + '\n[variant.en]\nsubject = "Hello"\n'
    folder = with_variant(tmp_path, toml, mjml_de=MJML)
    (folder / "email.de.mjml").rename(folder / "email.en.mjml")
    report = validate_campaign(folder, SITE, NOW)
    assert report.ok, report.problems
    assert report.languages == ["de", "en"]
    assert "Abmelden" in report.emails[None].html and "Unsubscribe" in report.variants["en"][None].html


def test_every_shipped_campaign_validates_and_spring_sale_speaks_german():
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "campaign.toml").is_file()):
        report = validate_campaign(folder, SITE, NOW)
        assert report.ok and not report.warnings, (folder, report.problems)
    sale = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    assert set(sale.variants["de"]) == {"vip", "everyone"}
    assert (
        "treuesten" in sale.variants["de"]["vip"].html
        and "treuesten" not in sale.variants["de"]["everyone"].html
    )


# --- frozen ------------------------------------------------------------------------------------------

OLD_COMPILED = {
    "sender": "Store <news@store.example>",
    "envelope_from": "news@store.example",
    "files": {"email.mjml": "ab"},
    "waves": {"all": {"subject": "Hi", "html": "<p>Hi</p>", "text": "Hi", "slots": {}, "headers": {}}},
}


def test_a_campaign_frozen_before_variants_reads_back_with_none():
    frozen = FrozenCampaign.from_json(OLD_COMPILED)
    assert frozen.language == "en" and frozen.variants == {}
    assert frozen.language_for("de", "de") == "en" and frozen.email_for("all", "de").subject == "Hi"
    assert frozen.to_json() == OLD_COMPILED  # and writes back the shape it had


def test_variants_round_trip_and_the_choice_of_language():
    data = {
        **OLD_COMPILED,
        "variants": {"de": {"all": {**OLD_COMPILED["waves"]["all"], "subject": "Hallo"}}},
    }
    frozen = FrozenCampaign.from_json(data)
    assert FrozenCampaign.from_json(frozen.to_json()) == frozen and frozen.to_json() == data
    assert frozen.email_for("vip", "de").subject == "Hallo" and frozen.email_for("vip", "en").subject == "Hi"
    # their language's, else the store's default's, else the folder's default
    assert frozen.language_for("de", "en") == "de"
    assert frozen.language_for("fr", "en") == "en"
    assert frozen.language_for("fr", "de") == "de"
    assert frozen.language_for(None, "de") == "de"
    assert frozen.language_for(None, "fr") == "en"
    assert frozen.language_for("en", "de") == "en"


# --- preview -------------------------------------------------------------------------------------------


def test_preview_of_one_variant(tmp_path):
    report = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    out = tmp_path / "out"
    files = write_preview(
        report, SITE, "alex@example.com", sample_values(SITE), out, screenshots=False, languages=["de"]
    )
    names = sorted(f.path.name for f in files)
    assert names == sorted(
        f"spring-sale-{w}.de.{s}" for w in ("everyone", "vip") for s in ("eml", "html", "txt")
    )
    message = email.message_from_bytes(
        (out / "spring-sale-vip.de.eml").read_bytes(), policy=email.policy.default
    )
    assert message["Subject"] == "Früher Zugang zum Frühjahrsverkauf für Alex"
    assert "Hallo Alex," in message.get_body(("html",)).get_content()


def test_the_preview_command_takes_a_language(app, tmp_path):
    out = tmp_path / "out"
    result = run(
        app,
        "preview",
        str(EXAMPLES / "spring-sale"),
        "--language",
        "de",
        "--out",
        str(out),
        "--no-screenshots",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"spring-sale-{w}.de.{s}" for w in ("everyone", "vip") for s in ("eml", "html", "txt")
    )
    assert "Abmelden" in (out / "spring-sale-everyone.de.txt").read_text("utf-8")
    refused = run(app, "preview", str(EXAMPLES / "spring-sale"), "--language", "fr", "--out", str(out))
    assert refused.exit_code == 1
    assert "has no fr email (its languages: en, de)" in refused.output


def test_the_dashboard_previews_each_language(make_app, tmp_path):
    import shutil

    from newsletter.models import Role
    from tests.test_admin import add, sign_in

    root = tmp_path / "campaigns"
    shutil.copytree(EXAMPLES / "spring-sale", root / "spring-sale")
    app = make_app(CAMPAIGNS_DIR=str(root))
    add(app.extensions["newsletter"], "vic@store.example", Role.VIEWER)
    client = app.test_client()
    assert sign_in(client, "vic@store.example").status_code == 303
    page = client.get("/admin/files/spring-sale?language=de").get_data(as_text=True)
    assert 'id="languages"' in page and "email.de.mjml" in page
    assert "Früher Zugang zum Frühjahrsverkauf für Alex" in page
    assert "/admin/files/spring-sale/preview.html?wave=vip&amp;language=de" in page
    frame = client.get("/admin/files/spring-sale/preview.html?wave=vip&language=de")
    assert frame.status_code == 200 and "Hallo Alex," in frame.get_data(as_text=True)
    english = client.get("/admin/files/spring-sale/preview.html?wave=vip").get_data(as_text=True)
    assert "Hello Alex," in english
    assert client.get("/admin/files/spring-sale?language=fr").status_code == 404


# --- sending -------------------------------------------------------------------------------------------


def _set_languages(runtime, languages: dict[int, str | None]) -> None:
    with runtime.sessions() as session:
        for subscriber_id, language in languages.items():
            session.execute(
                update(Subscriber).where(Subscriber.id == subscriber_id).values(language=language)
            )
        session.commit()


def _german_sale(tmp_path: Path) -> Path:
    """A sale folder with the spring sale's files (English and German) and a German subject."""
    start = now_floor()
    folder = write_sale(
        tmp_path,
        waves=[("all", "all", start + timedelta(minutes=1))],
        public_at=start + timedelta(days=1),
        variants=True,
    )
    assert (folder / "email.de.mjml").is_file()
    with (folder / "campaign.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[variant.de]\nsubject = "Früher Zugang, {{ subscriber.first_name }}"\n')
        toml.write('preheader = "Vor allen anderen"\n')
    return folder


def _by_recipient(smtp_sink) -> dict[str, tuple[bytes, email.message.EmailMessage]]:
    return {
        message["To"]: (data, message)
        for data in smtp_sink.take_raw()
        for message in [email.message_from_bytes(data, policy=email.policy.default)]
    }


@pytest.mark.parametrize("default_language", ["en", "de"])
def test_each_subscriber_gets_their_languages_email(
    make_app, make_subscriber, smtp_sink, work, tmp_path, default_language
):
    app = make_app(**NO_CAPS, DEFAULT_LANGUAGE=default_language)
    runtime = app.extensions["newsletter"]
    people = {
        lang: make_subscriber(f"{lang or 'none'}@example.com", topics=("early-access",), first_name=name)
        for lang, name in (("en", "Ellen"), ("de", "Dora"), (None, "Nico"), ("fr", "Fleur"))
    }
    _set_languages(runtime, {p.id: lang for lang, p in people.items()})
    campaign_id = schedule(runtime, _german_sale(tmp_path))
    with runtime.sessions() as session:
        frozen = FrozenCampaign.of(session.get(Campaign, campaign_id))
        assert set(frozen.variants) == {"de"} and frozen.language == "en"
    run_engine(runtime, work)

    sent = _by_recipient(smtp_sink)
    assert set(sent) == {"en@example.com", "de@example.com", "none@example.com", "fr@example.com"}
    german = {"de@example.com"} | (
        {"none@example.com", "fr@example.com"} if default_language == "de" else set()
    )
    for address, (data, message) in sent.items():
        name = people[address.split("@")[0] if address != "none@example.com" else None].first_name
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        if address in german:
            assert message["Subject"] == f"Früher Zugang, {name}"
            assert re.search(rb"^Subject: =\?utf-8\?", data, re.MULTILINE)  # RFC 2047 on the wire
            assert f"Hallo {name}," in html and "Abmelden" in text and "Unsubscribe" not in text
            assert "Vorverkauf für Stammkunden" in html  # the seeded topic's German label
            assert b'lang=3D"de"' in data  # the raw HTML part, quoted-printable
        else:
            assert message["Subject"] == f"Early access, {name}"
            assert f"Hello {name}," in html and "Unsubscribe" in text and "Abmelden" not in text
            assert "Vorverkauf für Stammkunden" not in html
            assert b'lang=3D"en"' in data
        assert "/early-access/" in html and "/unsubscribe/" in message["List-Unsubscribe"]

    with runtime.sessions() as session:
        ledger = {
            row.subscriber_id: row.language
            for row in session.scalars(select(Delivery).where(Delivery.state == DeliveryState.SENT))
        }
    assert ledger == {
        p.id: ("de" if f"{lang or 'none'}@example.com" in german else "en") for lang, p in people.items()
    }
    # the report counts what went out in each language (the campaign has variants)
    from newsletter.campaigns.report import report, table

    with runtime.sessions() as session:
        numbers = report(session, runtime.settings, session.get(Campaign, campaign_id))
    expected = {"de": len(german), "en": 4 - len(german)}
    assert numbers.languages == dict(sorted(expected.items(), key=lambda item: (-item[1], item[0])))
    assert numbers.to_json()["languages"] == numbers.languages
    line = ", ".join(f"{lang} {n}" for lang, n in numbers.languages.items())
    assert f"delivered per language: {line}" in table(numbers).notes


def test_validate_names_the_broken_variant_file(app, tmp_path):
    jinja = with_variant(
        tmp_path / "a",
        mjml_de=GERMAN_MJML.replace("{{ subscriber.first_name }}", "{{ subscriber.shoe_size }}"),
    )
    unclosed = with_variant(tmp_path / "b", mjml_de=GERMAN_MJML.replace("</mj-section>", ""))
    result = run(app, "validate", str(jinja), str(unclosed))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{jinja}/email.de.mjml:5:27: 'dict object' has no attribute 'shoe_size'",
        f"{jinja}: 1 error(s), 0 warning(s)",
        f"{unclosed}/email.de.mjml:3:1: MJML: <mj-section> is never closed "
        "(unexpected end of stream in root template)",
        f"{unclosed}: 1 error(s), 0 warning(s)",
    ]


def test_a_link_only_the_german_email_has_is_tracked_and_followed(
    make_app, make_subscriber, smtp_sink, work, tmp_path
):
    from tests.test_clicks import BROWSER

    app = make_app(**NO_CAPS)
    runtime = app.extensions["newsletter"]
    dora = make_subscriber("dora@example.com", topics=("early-access",), first_name="Dora")
    make_subscriber("ellen@example.com", topics=("early-access",), first_name="Ellen")
    _set_languages(runtime, {dora.id: "de"})
    folder = _german_sale(tmp_path)
    german_only = "https://shop.example/de/fruehling"
    mjml = (folder / "email.de.mjml").read_text("utf-8")
    (folder / "email.de.mjml").write_text(
        mjml.replace(
            "</mj-column>", f'<mj-text><a href="{german_only}">Auf Deutsch</a></mj-text></mj-column>'
        ),
        "utf-8",
    )
    toml = folder / "campaign.toml"
    toml.write_text("track_clicks = true\n" + toml.read_text("utf-8"), "utf-8")
    schedule(runtime, folder)
    run_engine(runtime, work)
    sent = _by_recipient(smtp_sink)
    german_html = sent["dora@example.com"][1].get_body(("html",)).get_content()
    english_html = sent["ellen@example.com"][1].get_body(("html",)).get_content()
    assert german_only not in german_html and german_only not in english_html  # rewritten / absent
    paths = re.findall(r'href="https://newsletter\.test(/c/[^"]+)"', german_html)
    with runtime.sessions() as session:
        frozen = FrozenCampaign.of(session.scalar(select(Campaign)))
    index = frozen.links.index(german_only)  # one list for every language
    assert index not in frozen.email_for("all").links and index in frozen.email_for("all", "de").links
    path = next(p for p in paths if p.endswith(f"/{index}"))
    clock.travel(timedelta(minutes=10))  # a person reading later, not a scanner
    followed = app.test_client().get(path, headers={"User-Agent": BROWSER})
    assert followed.status_code == 302 and followed.headers["Location"] == german_only


def test_preview_for_a_subscriber_shows_their_language(app, runtime, make_subscriber, tmp_path):
    dora = make_subscriber("dora@example.com", topics=("early-access",), first_name="Dora")
    _set_languages(runtime, {dora.id: "de"})
    out = tmp_path / "out"
    args = ("preview", str(EXAMPLES / "spring-sale"), "--subscriber", "dora@example.com", "--out", str(out))
    result = run(app, *args, "--no-screenshots")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"spring-sale-{w}.de.{s}" for w in ("everyone", "vip") for s in ("eml", "html", "txt")
    )
    assert "Hallo Dora," in (out / "spring-sale-vip.de.html").read_text("utf-8")


def test_previews_choose_a_language_as_sending_does():
    report = validate_campaign(EXAMPLES / "spring-sale", SITE, NOW)
    frozen = FrozenCampaign.from_json({**OLD_COMPILED, "variants": {"de": OLD_COMPILED["waves"]}})
    for language in ("en", "de", "fr", None, "xx"):
        for default in ("en", "de", "fr"):
            assert report.language_for(language, default) == frozen.language_for(language, default)
