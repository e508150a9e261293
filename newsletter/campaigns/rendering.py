"""Campaign rendering, once per campaign (or per wave): Jinja sandbox -> MJML -> inlined CSS -> text.

Personal values are slot tokens (see ``newsletter.mail.skeleton``) rendered in place of
``subscriber.*`` and ``links.*``; after inlining, each token is re-labelled with its context
(HTML text, attribute, whole URL, inside a URL, plain text, header) so the per-recipient
step knows how to escape the value it splices in. MJML and premailer never run per recipient.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from mjml import mjml2html
from premailer import Premailer

from newsletter.campaigns.files import MJML_FILE, TEXT_FILE, CampaignSource, WaveSource, control_character
from newsletter.campaigns.site import SiteContext
from newsletter.campaigns.text import html_to_text
from newsletter.core.languages import SOURCE_LANGUAGE, translations
from newsletter.mail.sandbox import MailEnvironment, PersonalValue, missing, sandbox
from newsletter.mail.sandbox import template_error as sandbox_error
from newsletter.mail.skeleton import SLOT, slot_of, slot_token
from newsletter.mail.templates import TEMPLATES as ALL_TEMPLATES

TEMPLATES = ALL_TEMPLATES / "email"
_premailer_lock = threading.Lock()  # premailer is not thread-safe


@dataclass(frozen=True)
class RenderedEmail:
    """One compiled email: personal values are slot tokens, described in ``slots``."""

    subject: str
    html: str
    text: str
    #: token -> (value name, context); JSON-friendly once each tuple becomes a list
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)


class RenderError(Exception):
    """A template failed; ``file``, ``line`` and ``col`` say where."""

    def __init__(self, file: str, line: int, col: int, message: str):
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file, self.line, self.col, self.message = file, line, col, message


def environment(folder: Path, overrides_dir: str = "", language: str = SOURCE_LANGUAGE) -> MailEnvironment:
    """The sandbox: the campaign folder first, then OVERRIDES_DIR/email, then templates/email (base.mjml);
    base.mjml's strings (the footer) in ``language``, the language of the email it frames."""
    overrides = [str(Path(overrides_dir) / "email")] if overrides_dir else []
    env = sandbox(FileSystemLoader([str(folder), *overrides, str(TEMPLATES)]))
    if language != SOURCE_LANGUAGE:
        env.install_gettext_translations(translations(language), newstyle=True)
    return env


#: what a campaign without ``[reward]`` says when its email prints a code anyway
NO_REWARD = (
    "'reward' is empty: this campaign gives no codes; add a [reward] table to campaign.toml "
    '(pool = "NAME", or prefix = "VIP" and expires_in = "30d") or take reward.* out of the email'
)


def template_context(source: CampaignSource, site: SiteContext, wave: WaveSource) -> dict[str, Any]:
    """Variables marketers use (documented in campaigns/README.md)."""
    links = {
        "unsubscribe": PersonalValue(slot_token("unsubscribe_url")),
        "preferences": PersonalValue(slot_token("preferences_url")),
    }
    if source.sale:
        links["early_access"] = PersonalValue(slot_token("early_access_url"))
    sale = source.sale
    return {
        "subscriber": {
            "first_name": PersonalValue(slot_token("first_name")),
            "email": PersonalValue(slot_token("email")),
        },
        "links": links,
        "campaign": {
            "slug": source.slug,
            "name": source.name,
            "topic": source.topic,
            "topic_name": site.topic_name(source.topic, source.language),  # in the variant's language
            "language": source.language,  # the variant's (base.mjml: <mjml lang>)
        },
        "sale": {"url": sale.url, "public_at": sale.public_at, "ends_at": sale.ends_at} if sale else None,
        "store": {"name": site.store_name, "postal_address": site.postal_address, "url": site.base_url},
        "brand": site.brand,  # logo and colours (docs/theming.md)
        "wave": {"name": wave.name, "send_at": wave.send_at},
        # [email]: base.mjml's mj-body takes them
        "email": {"background": source.background or "#f4f4f4", "width": source.width or 600},
        # the recipient's own code, assigned before sending ([reward]); None without one
        "reward": {
            "code": PersonalValue(slot_token("reward_code")),
            "expires": PersonalValue(slot_token("reward_expires")),
        }
        if source.reward
        else missing("reward", NO_REWARD),
    }


def template_error(exc: Exception, default_file: str, source: str | None = None) -> RenderError:
    """Where in which template (the campaign's file, or the shared layouts) ``exc`` happened."""
    found = sandbox_error(exc, default_file, (str(TEMPLATES),), source)
    return RenderError(found.file, found.line, found.col, found.message)


def render_string(env: MailEnvironment, text: str, context: dict, where: tuple[str, int, int]) -> str:
    """A one-line template from campaign.toml (subject, preheader); errors point at its value."""
    try:
        return env.from_string(text).render(context)
    except Exception as exc:  # noqa: BLE001 - every template failure becomes a located problem
        error = template_error(exc, where[0], source=text)
        # where[2] is the value's opening quote; the template starts one column further
        raise RenderError(where[0], where[1], where[2] + error.col, error.message) from None


def render_file(env: MailEnvironment, folder: Path, name: str, context: dict) -> str:
    path = str(folder / name)
    try:
        return env.get_template(name).render(context)
    except Exception as exc:  # noqa: BLE001
        raise template_error(exc, path) from None


def inline_css(html: str) -> str:
    """premailer without network (MJML links Google Fonts) and without cssutils' log flood."""
    with _premailer_lock:
        inlined = Premailer(
            html,
            allow_network=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            remove_classes=False,
            keep_style_tags=True,
            strip_important=False,
        ).transform()
    if html[:15].lower().startswith("<!doctype") and not inlined[:15].lower().startswith("<!doctype"):
        inlined = "<!doctype html>\n" + inlined
    return inlined


def place_slots(html: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    """Give every unplaced token in HTML its context: html, attr, url (whole href) or query."""
    slots: dict[str, tuple[str, ...]] = {}

    def label(match: re.Match) -> str:
        if match.group(3):
            return match.group()
        start = match.start()
        context = "html"
        if html.rfind("<", 0, start) > html.rfind(">", 0, start):
            tag = html[html.rfind("<", 0, start) : start]
            attr = re.search(r"""([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*["']?([^"'\s>]*)$""", tag)
            if attr and attr.group(1).lower() in ("href", "src", "action"):
                context = "query" if attr.group(2) else "url"
            else:
                context = "attr"
        token, slots[token] = slot_of(match, context)
        return token

    return SLOT.sub(label, html), slots


def text_slots(text: str, context: str) -> tuple[str, dict[str, tuple[str, ...]]]:
    slots: dict[str, tuple[str, ...]] = {}

    def label(match: re.Match) -> str:
        token, slots[token] = slot_of(match, context)
        return token

    return SLOT.sub(label, text), slots


def mangled(text: str) -> bool:
    """True if a filter changed a token (``|upper``, ``|truncate``...): it would leak unreplaced."""
    return len(re.findall("~nl~", text, re.IGNORECASE)) != len(SLOT.findall(text))


@dataclass(frozen=True)
class Sources:
    """A wave's Jinja output; waves with equal sources share one compiled email."""

    subject: str
    mjml: str
    text: str | None


def _one_line(env: MailEnvironment, key: str, text: str, context: dict, where: tuple[str, int, int]) -> str:
    """A rendered header-bound string: a control character is an error, never folded away unseen."""
    rendered = render_string(env, text, context, where)
    found = control_character(rendered)
    if found:
        raise RenderError(*where, f"{key} renders to text with {found}; it must be one line")
    return " ".join(rendered.split())


def render_sources(source: CampaignSource, site: SiteContext, wave: WaveSource) -> Sources:
    """Run the Jinja step for one wave (RenderError on failure)."""
    env = environment(source.folder, site.overrides_dir, source.language)
    context = template_context(source, site, wave)
    toml = str(source.folder / "campaign.toml")
    subject, preheader = (
        _one_line(env, key, text, context, (toml, *source.where(key)))
        for key, text in (("subject", source.subject), ("preheader", source.preheader))
    )
    context["campaign"] = {**context["campaign"], "subject": subject, "preheader": preheader}
    mjml = render_file(env, source.folder, source.mjml_file, context)
    text = render_file(env, source.folder, source.text_file, context) if source.text is not None else None
    return Sources(subject, mjml, text)


def compile_email(
    sources: Sources, folder: Path, mjml_file: str = MJML_FILE, text_file: str = TEXT_FILE
) -> RenderedEmail:
    """MJML -> inline CSS -> text, and tokens labelled with their contexts."""
    try:
        raw_html = mjml2html(sources.mjml)
    except ValueError as exc:
        raise RenderError(str(folder / mjml_file), 1, 1, f"MJML: {exc}") from None
    html, slots = place_slots(inline_css(raw_html))
    text, text_slots_ = text_slots(sources.text if sources.text is not None else html_to_text(html), "text")
    subject, subject_slots = text_slots(sources.subject, "header")
    for what, value, file in (
        ("subject", subject, "campaign.toml"),
        ("HTML", html, mjml_file),
        ("text", text, text_file if sources.text is not None else mjml_file),
    ):
        if mangled(value):
            raise RenderError(
                str(folder / file),
                1,
                1,
                f"a personal value in the {what} was changed by a filter; "
                "print subscriber.* and links.* as they are",
            )
    return RenderedEmail(subject, html, text, {**slots, **text_slots_, **subject_slots})


def render_campaign(source: CampaignSource, site: SiteContext) -> dict[str | None, RenderedEmail]:
    """Every wave's email: one key None when all waves get the same email, else one per wave.

    ``source`` is the folder's default email or one of its ``variants`` (each rendered on its own)."""
    per_wave = {wave.name: render_sources(source, site, wave) for wave in source.waves}
    compiled: dict[Sources, RenderedEmail] = {}
    for sources in per_wave.values():
        if sources not in compiled:
            compiled[sources] = compile_email(sources, source.folder, source.mjml_file, source.text_file)
    if len(compiled) == 1:
        return {None: next(iter(compiled.values()))}
    return {name: compiled[sources] for name, sources in per_wave.items()}
