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
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mjml import mjml2html
from premailer import Premailer

from newsletter.campaigns.files import MJML_FILE, TEXT_FILE, CampaignSource, WaveSource, control_character
from newsletter.campaigns.locate import jinja_position
from newsletter.campaigns.site import SiteContext
from newsletter.campaigns.text import html_to_text
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


class PersonalValue(str):
    """A slot token standing for a value only known per recipient."""

    def __bool__(self) -> bool:
        raise TypeError(
            "personal values (subscriber.*, links.*) are only known when sending: print them "
            "(with a fallback: {{ subscriber.first_name or 'there' }}), do not test them with if"
        )

    def with_fallback(self, fallback: Any) -> PersonalValue:
        """The same value, with text to use when it is empty for a recipient."""
        match = SLOT.fullmatch(self)
        assert match is not None
        return PersonalValue(slot_token(match.group(1), fallback=str(fallback)))


class CampaignEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, where ``personal or "fallback"`` keeps the fallback for sending time."""

    intercepted_binops = frozenset(["or"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "or":
            return left.with_fallback(right) if isinstance(left, PersonalValue) else left or right
        return super().call_binop(context, operator, left, right)


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's default filter, keeping the fallback of a personal value for sending time."""
    if isinstance(value, PersonalValue):
        return value.with_fallback(default_value)
    return default_value if isinstance(value, Undefined) or (boolean and not value) else value


def environment(folder: Path) -> CampaignEnvironment:
    """The sandbox: the campaign folder first, then templates/email (base.mjml)."""
    env = CampaignEnvironment(
        loader=FileSystemLoader([str(folder), str(TEMPLATES)]),
        autoescape=select_autoescape(enabled_extensions=("mjml", "html"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


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
            "topic_name": site.topics.get(source.topic, source.topic),
        },
        "sale": {"url": sale.url, "public_at": sale.public_at, "ends_at": sale.ends_at} if sale else None,
        "store": {"name": site.store_name, "postal_address": site.postal_address, "url": site.base_url},
        "wave": {"name": wave.name, "send_at": wave.send_at},
        # [email]: base.mjml's mj-body takes them
        "email": {"background": source.background or "#f4f4f4", "width": source.width or 600},
        # the recipient's own code, assigned before sending ([reward]); None without one
        "reward": {
            "code": PersonalValue(slot_token("reward_code")),
            "expires": PersonalValue(slot_token("reward_expires")),
        }
        if source.reward
        else None,
    }


def _source_of(file: str) -> str:
    try:
        return Path(file).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def template_error(
    exc: Exception, default_file: str, files: tuple[str, ...], source: str | None = None
) -> RenderError:
    """Where in which template an exception happened (Jinja keeps template lines in tracebacks);
    the column is found in the template's source (``source``, else the file's)."""
    if isinstance(exc, TemplateSyntaxError):
        file = exc.filename or default_file
        line = exc.lineno or 1
        text = source if source is not None and file == default_file else _source_of(file)
        line, col = jinja_position(text, line, exc.message or "")
        return RenderError(file, line, col, f"Jinja: {exc.message}")
    line, file = 1, default_file
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename in files or frame.filename.startswith(str(TEMPLATES)):
            file, line = frame.filename, frame.lineno or 1
    kind = type(exc).__name__
    message = str(exc) if isinstance(exc, TemplateError) else f"{kind}: {exc}"
    if kind == "SecurityError":
        message = f"not allowed in a campaign: {exc}"
    text = source if source is not None and file == default_file else _source_of(file)
    line, col = jinja_position(text, line, message)
    return RenderError(file, line, col, message)


def render_string(env: CampaignEnvironment, text: str, context: dict, where: tuple[str, int, int]) -> str:
    """A one-line template from campaign.toml (subject, preheader); errors point at its value."""
    try:
        return env.from_string(text).render(context)
    except Exception as exc:  # noqa: BLE001 - every template failure becomes a located problem
        error = template_error(exc, where[0], (), source=text)
        # where[2] is the value's opening quote; the template starts one column further
        raise RenderError(where[0], where[1], where[2] + error.col, error.message) from None


def render_file(env: CampaignEnvironment, folder: Path, name: str, context: dict) -> str:
    path = str(folder / name)
    try:
        return env.get_template(name).render(context)
    except Exception as exc:  # noqa: BLE001
        raise template_error(exc, path, (path,)) from None


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


def _one_line(
    env: CampaignEnvironment, key: str, text: str, context: dict, where: tuple[str, int, int]
) -> str:
    """A rendered header-bound string: a control character is an error, never folded away unseen."""
    rendered = render_string(env, text, context, where)
    found = control_character(rendered)
    if found:
        raise RenderError(*where, f"{key} renders to text with {found}; it must be one line")
    return " ".join(rendered.split())


def render_sources(source: CampaignSource, site: SiteContext, wave: WaveSource) -> Sources:
    """Run the Jinja step for one wave (RenderError on failure)."""
    env = environment(source.folder)
    context = template_context(source, site, wave)
    toml = str(source.folder / "campaign.toml")
    subject, preheader = (
        _one_line(env, key, text, context, (toml, *source.locations.value(key)))
        for key, text in (("subject", source.subject), ("preheader", source.preheader))
    )
    context["campaign"] = {**context["campaign"], "subject": subject, "preheader": preheader}
    mjml = render_file(env, source.folder, MJML_FILE, context)
    text = render_file(env, source.folder, TEXT_FILE, context) if source.text is not None else None
    return Sources(subject, mjml, text)


def compile_email(sources: Sources, folder: Path) -> RenderedEmail:
    """MJML -> inline CSS -> text, and tokens labelled with their contexts."""
    try:
        raw_html = mjml2html(sources.mjml)
    except ValueError as exc:
        raise RenderError(str(folder / MJML_FILE), 1, 1, f"MJML: {exc}") from None
    html, slots = place_slots(inline_css(raw_html))
    text, text_slots_ = text_slots(sources.text if sources.text is not None else html_to_text(html), "text")
    subject, subject_slots = text_slots(sources.subject, "header")
    for what, value, file in (
        ("subject", subject, "campaign.toml"),
        ("HTML", html, MJML_FILE),
        ("text", text, TEXT_FILE if sources.text is not None else MJML_FILE),
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
    """Every wave's email: one key None when all waves get the same email, else one per wave."""
    per_wave = {wave.name: render_sources(source, site, wave) for wave in source.waves}
    compiled: dict[Sources, RenderedEmail] = {}
    for sources in per_wave.values():
        if sources not in compiled:
            compiled[sources] = compile_email(sources, source.folder)
    if len(compiled) == 1:
        return {None: next(iter(compiled.values()))}
    return {name: compiled[sources] for name, sources in per_wave.items()}
