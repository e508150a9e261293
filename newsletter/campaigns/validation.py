"""``validate_campaign``: every problem of a campaign folder, located, plus its rendered emails."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from jinja2 import TemplateSyntaxError

from newsletter.campaigns.audience import AudienceError, parse
from newsletter.campaigns.files import (
    CAMPAIGN_FILE,
    IMPLICIT_WAVE,
    MJML_FILE,
    TEXT_FILE,
    CampaignSource,
    Problem,
    WaveSource,
    load_campaign,
    read_utf8,
    variant_files,
)
from newsletter.campaigns.html_checks import hidden_footer, parse_html, relative_urls
from newsletter.campaigns.rendering import (
    RenderedEmail,
    RenderError,
    environment,
    render_campaign,
    template_error,
)
from newsletter.campaigns.site import SiteContext
from newsletter.mail.mjml_source import unbalanced, unknown_tags
from newsletter.mail.sandbox import position as _position
from newsletter.mail.skeleton import SLOT, slot_token

SUBJECT_WARN_LENGTH = 60
#: a time this little in the past still counts as "now" (scheduling at 10:03 for 10:00 sends at once)
PAST_GRACE = timedelta(minutes=15)
#: Gmail clips messages whose HTML is larger than this
GMAIL_CLIP_BYTES = 102 * 1024


@dataclass
class ValidationReport:
    folder: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    campaign: CampaignSource | None = None
    #: wave name -> email, or the single key None when every wave gets the same email
    emails: dict[str | None, RenderedEmail] = field(default_factory=dict)
    #: the per-language variants' emails: language -> wave name (or None) -> email, like ``emails``
    variants: dict[str, dict[str | None, RenderedEmail]] = field(default_factory=dict)

    def emails_in(self, language: str | None) -> dict[str | None, RenderedEmail]:
        """The emails of ``language``'s variant; the default's for None or the default's own language."""
        if language is None or (self.campaign is not None and language == self.campaign.language):
            return self.emails
        return self.variants.get(language, {})

    @property
    def languages(self) -> list[str]:
        """The default's language, then each variant's."""
        if self.campaign is None:
            return []
        return [self.campaign.language, *self.variants]

    def language_for(self, language: str | None, default_language: str) -> str:
        """The language of the email a person with ``language`` gets, as sending decides it
        (``FrozenCampaign.language_for``): theirs, else the store default's, else the default's."""
        return next(
            (lang for lang in (language, default_language) if lang in self.languages), self.languages[0]
        )

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def problems(self) -> list[Problem]:
        """Errors and warnings in file order."""
        return sorted(self.errors + self.warnings, key=lambda p: (p.file, p.line, p.col))


def sample_values(site: SiteContext) -> dict[str, str]:
    """Personal values of the sample subscriber (previews, size and length estimates)."""
    return {
        "first_name": "Alex",
        "email": "alex@example.com",
        "unsubscribe_url": f"{site.base_url}/unsubscribe/preview-" + "x" * 90,
        "preferences_url": f"{site.base_url}/preferences/preview-" + "x" * 90,
        "early_access_url": f"{site.base_url}/early-access/preview-" + "x" * 90,
        "reward_code": "VIP-1234567-20300131-ABCDEFGHIJKLMNOP",
        "reward_expires": "31 January 2030",
    }


def fill(text: str, values: dict[str, str]) -> str:
    """Tokens replaced by values, unescaped (estimates only; the real splice is the skeleton's)."""
    return SLOT.sub(lambda m: values.get(m.group(1), ""), text)


def validate_campaign(folder: Path, site: SiteContext, now: datetime) -> ValidationReport:
    """Load, check and render a campaign folder; ``now`` is naive UTC (times must be after it)."""
    report = ValidationReport(folder)
    problems: list[Problem] = []
    source = load_campaign(folder, problems)
    report.campaign = source
    if source is not None:
        toml = str(folder / CAMPAIGN_FILE)
        problems += _check_topic(source, site, toml)
        problems += _check_audiences(source, toml)
        problems += _check_times(source, now, toml)
        each = [source, *source.variants.values()]
        for one in each:
            problems += _check_mjml_text(folder, one.mjml, one.mjml_file)
        broken = {p.file for p in problems if not p.warning and p.file != toml}
        for one in each:  # a variant with broken files does not keep the others from rendering
            if {str(folder / one.mjml_file), str(folder / one.text_file)} & broken:
                problems += _check_jinja_syntax(folder, (one.mjml_file, one.text_file))
                continue
            emails, more = _render(one, site)
            problems += more
            if one is source:
                report.emails = emails
            else:
                report.variants[one.language] = emails
    elif (folder / MJML_FILE).is_file():  # the TOML is unreadable; the templates can still be checked
        variants = [path for _, _, path in variant_files(folder)]
        for path in variants:  # load_campaign stopped before reading them: say which are not UTF-8
            read_utf8(path, problems)
        names = [MJML_FILE, TEXT_FILE, *(path.name for path in variants)]
        problems += _check_jinja_syntax(folder, names)
        for name in (n for n in names if n.endswith(".mjml")):
            if not any(p.file == str(folder / name) for p in problems):
                problems += _check_mjml_text(folder, (folder / name).read_text("utf-8"), name)
    problems = list(dict.fromkeys(problems))  # a variant sharing the default's subject shares its mistakes
    report.errors = [p for p in problems if not p.warning]
    report.warnings = [p for p in problems if p.warning]
    return report


def validate_folder(folder: Path, site: SiteContext, now: datetime) -> ValidationReport:
    """``validate_campaign``, an unexpected failure reported as the folder's one error (never raised),
    so that whatever checks many folders goes on to the next (``campaign validate``, /admin/files)."""
    try:
        return validate_campaign(folder, site, now)
    except Exception as exc:  # noqa: BLE001 - callers report, they do not crash
        problem = Problem(str(folder), 1, 1, f"cannot validate: {type(exc).__name__}: {exc}")
        return ValidationReport(folder, errors=[problem])


def _check_topic(source: CampaignSource, site: SiteContext, toml: str) -> list[Problem]:
    offered = [slug for slug in site.topics if slug not in site.retired_topics]
    if source.topic in offered:
        return []
    line, col = source.locations.value("topic")
    known = ", ".join(offered) or "none: run newsletter db upgrade"
    if source.topic in site.retired_topics:
        # nobody would get it: the wave selects nobody and queued rows are skipped
        message = f"topic {source.topic!r} is retired: it is mailed to nobody (offered: {known})"
    else:
        message = f"unknown topic {source.topic!r} (known: {known})"
    return [Problem(toml, line, col, message)]


def _check_audiences(source: CampaignSource, toml: str) -> list[Problem]:
    problems = []
    for index, wave in enumerate(source.waves):
        if wave.name == IMPLICIT_WAVE and not source.locations.tables.get(("wave", 0)):
            continue
        try:
            parse(wave.audience)
        except AudienceError as exc:
            line, col = source.locations.value("audience", "wave", index)
            # col points at the opening quote; the expression starts one further
            problems.append(Problem(toml, line, col + exc.column, f"audience: {exc.message}"))
    return problems


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _check_times(source: CampaignSource, now: datetime, toml: str) -> list[Problem]:
    problems = []
    implicit = not source.locations.tables.get(("wave", 0))
    now = now - PAST_GRACE

    def at(key: str, table: str = "", index: int = 0) -> tuple[int, int]:
        return source.locations.value(key, table, index)

    for index, wave in enumerate(source.waves):
        where = at("send_at") if implicit else at("send_at", "wave", index)
        label = "send_at" if implicit else f"wave {wave.name!r}"
        if wave.send_at <= now:
            problems.append(Problem(toml, *where, f"{label} is in the past ({_when(wave.send_at)})"))
        if index and wave.send_at < source.waves[index - 1].send_at:
            previous = source.waves[index - 1]
            problems.append(
                Problem(toml, *where, f"{label} starts before the wave before it ({previous.name!r})")
            )
        if source.sale and wave.send_at >= source.sale.public_at:
            problems.append(
                Problem(
                    toml,
                    *where,
                    f"{label} starts after the sale is public ({_when(source.sale.public_at)}): "
                    "early access must come first",
                )
            )
    sale = source.sale
    if sale:
        for key, value in (("public_at", sale.public_at), ("ends_at", sale.ends_at)):
            if value <= now:
                problems.append(
                    Problem(toml, *at(key, "sale"), f"sale {key} is in the past ({_when(value)})")
                )
        if sale.ends_at <= sale.public_at:
            problems.append(Problem(toml, *at("ends_at", "sale"), "sale ends_at must be after public_at"))
    if source.deliver_by:
        last = max((w.send_at for w in source.waves), default=None)
        if source.deliver_by <= now:
            problems.append(Problem(toml, *at("deliver_by"), "deliver_by is in the past"))
        elif last and source.deliver_by <= last:
            problems.append(Problem(toml, *at("deliver_by"), "deliver_by must be after the last send_at"))
    return problems


def unchanged_until(report: ValidationReport, now: datetime) -> datetime:
    """Until when validating the same files gives the same report as at ``now``: the first moment a
    time of the campaign falls into the past (the one check that reads the clock is ``_check_times``)."""
    source = report.campaign
    if source is None:
        return datetime.max
    times = [w.send_at for w in source.waves] + ([source.deliver_by] if source.deliver_by else [])
    if source.sale:
        times += [source.sale.public_at, source.sale.ends_at]
    first = min((t for t in times if t > now - PAST_GRACE), default=datetime.max)
    return first + PAST_GRACE if first < datetime.max - PAST_GRACE else datetime.max


def _check_jinja_syntax(folder: Path, names: Iterable[str] = (MJML_FILE, TEXT_FILE)) -> list[Problem]:
    """Jinja syntax errors of the email files ``names``, found without rendering (other checks failed)."""
    env, problems = environment(folder), []
    for name in names:
        path = folder / name
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # missing or undecodable: load_campaign said so
        try:
            env.parse(text, name, str(path))
        except TemplateSyntaxError as exc:
            error = template_error(exc, str(path), source=text)
            problems.append(Problem(error.file, error.line, error.col, error.message))
    return problems


def _check_mjml_text(folder: Path, text: str, name: str = MJML_FILE) -> list[Problem]:
    """What can be pointed at in an email file itself: unknown tags, images without alt, plain-http images."""
    file, problems = str(folder / name), []
    problems += [
        Problem(file, line, col, f"unknown MJML tag <{tag}>") for line, col, tag in unknown_tags(text)
    ]
    for match in re.finditer(r"<mj-image\b[^>]*>?", text, re.IGNORECASE):
        if not re.search(r"\balt\s*=", match.group()):
            problems.append(
                Problem(file, *_position(text, match.start()), "image without alt text", warning=True)
            )
    body = re.search(r"<mj-body\b", text)
    if body and re.search(r"""\{%-?\s*extends\s+["']base\.mjml""", text):
        message = (
            "base.mjml writes <mj-body>, so this one's attributes are lost: set the background and "
            'width in campaign.toml ([email] background = "#112233", width = 640)'
        )
        problems.append(Problem(file, *_position(text, body.start()), message, warning=True))
    for match in re.finditer(r"<img\b[^>]*>", text, re.IGNORECASE):
        if not re.search(r"\balt\s*=", match.group()):
            problems.append(
                Problem(file, *_position(text, match.start()), "image without alt text", warning=True)
            )
    for match in re.finditer(
        r"""\b(?:src|background-url)\s*=\s*["']?(http://[^"'\s>]+)""", text, re.IGNORECASE
    ):
        problems.append(
            Problem(
                file,
                *_position(text, match.start(1)),
                f"remote image over plain http (use https): {match.group(1)}",
                warning=True,
            )
        )
    return problems


def _locate(mjml: str, clues: tuple[str, ...]) -> tuple[int, int]:
    """Where the campaign's own file says what a clue describes; else its head block; else 1:1."""
    for clue in clues:
        match = re.search(clue, mjml, re.IGNORECASE)
        if match:
            return _position(mjml, match.start())
    head = re.search(r"\{%-?\s*block\s+head\b", mjml)
    return _position(mjml, head.start()) if head else (1, 1)


def _locate_url(mjml: str, url: str) -> tuple[int, int]:
    """The first place email.mjml writes ``url`` as a value (1:1 when it came from elsewhere)."""
    for written in dict.fromkeys((url, html.escape(url))):
        match = re.search(rf"""(?:=\s*["']?|\(\s*["']?)({re.escape(written)})(?=["')\s>])""", mjml)
        match = match or re.search(rf"(?<![\w/.-]){re.escape(written)}(?![\w/.-])", mjml)
        if match:
            return _position(mjml, match.start(match.lastindex or 0))
    return 1, 1


def _render(
    source: CampaignSource, site: SiteContext
) -> tuple[dict[str | None, RenderedEmail], list[Problem]]:
    """Render every wave and check the results; a template failure is one located problem."""
    checked = source
    if not source.waves:  # schema errors elsewhere; still check the templates
        checked = replace(source, waves=[WaveSource(IMPLICIT_WAVE, "all", datetime(2000, 1, 1))])
    try:
        emails = render_campaign(checked, site)
    except RenderError as exc:
        if exc.message.startswith("MJML:"):
            unbalanced_at = unbalanced(source.mjml)
            if unbalanced_at:  # MJML names no place: the campaign's own tags usually say where
                line, col, why = unbalanced_at
                return {}, [Problem(exc.file, line, col, f"MJML: {why} ({exc.message[6:]})")]
        first = Problem(exc.file, exc.line, exc.col, exc.message)
        if exc.file == str(source.folder / CAMPAIGN_FILE) and (source.subject, source.preheader) != (
            "subject",
            "",
        ):  # the subject or preheader failed: render once more without them, for the email's own errors
            return {}, [first, *_render(replace(checked, subject="subject", preheader=""), site)[1]]
        return {}, [first]
    except Exception as exc:  # noqa: BLE001 - a broken campaign must never crash the caller
        file = str(source.folder / source.mjml_file)
        return {}, [Problem(file, 1, 1, f"cannot render: {type(exc).__name__}: {exc}")]
    problems = [p for name, email in emails.items() for p in _check_email(source, site, name, email)]
    return emails, list(dict.fromkeys(problems))  # waves sharing a mistake report it once


def _check_email(
    source: CampaignSource, site: SiteContext, name: str | None, email: RenderedEmail
) -> list[Problem]:
    """Footer and unsubscribe link present; subject length and HTML size within reason."""
    problems = []
    mjml_file, toml = str(source.folder / source.mjml_file), str(source.folder / CAMPAIGN_FILE)
    which = f" (wave {name!r})" if name else ""
    address = html.escape(site.postal_address, quote=False)
    unsubscribe = f'href="{slot_token("unsubscribe_url", "url")}"'
    if (
        unsubscribe not in email.html
        or slot_token("preferences_url", "url") not in email.html
        or (address not in email.html)
    ):
        problems.append(
            Problem(
                mjml_file,
                1,
                1,
                f'the footer is missing{which}: extend base.mjml ({{% extends "base.mjml" %}}) and keep '
                "its footer (unsubscribe and preferences links, postal address)",
            )
        )
    doc = parse_html(email.html)
    for hidden in hidden_footer(doc, site.postal_address):
        message = f"the footer's {hidden.what} is hidden{which}: {hidden.reason}; every reader must see it"
        problems.append(Problem(mjml_file, *_locate(source.mjml, hidden.clues), message))
    for url, attribute in relative_urls(doc).items():
        message = (
            f"not an absolute URL in {attribute}: {url!r}; mail clients cannot resolve it "
            "(use https://..., mailto: or tel:)"
        )
        problems.append(Problem(mjml_file, *_locate_url(source.mjml, url), message))
    if slot_token("unsubscribe_url", "text") not in email.text or site.postal_address not in email.text:
        text_file = str(source.folder / source.text_file) if source.text is not None else mjml_file
        needs = "{{ links.unsubscribe }} and {{ store.postal_address }}"
        problems.append(Problem(text_file, 1, 1, f"the plain text{which} must carry {needs}"))
    values = sample_values(site)
    subject = fill(email.subject, values)
    if len(subject) > SUBJECT_WARN_LENGTH:
        message = f"subject is {len(subject)} characters{which}; phones show about {SUBJECT_WARN_LENGTH}"
        problems.append(Problem(toml, *source.where("subject"), message, warning=True))
    size = len(fill(email.html, values).encode("utf-8"))
    if size > GMAIL_CLIP_BYTES:
        message = f"HTML is {size // 1024} KB{which}; Gmail clips messages over 102 KB, footer included"
        problems.append(Problem(mjml_file, 1, 1, message, warning=True))
    return problems


def find_campaigns(root: Path) -> list[Path]:
    """Every campaign folder under ``root`` (a folder holding campaign.toml), by name."""
    return sorted(p.parent for p in root.glob(f"*/{CAMPAIGN_FILE}"))
