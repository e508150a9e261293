"""Loading ``campaigns/<slug>/campaign.toml``: the schema, and where each key sits in the file.

Loading never raises on bad input: every problem becomes a ``Problem`` with the file, line
and column, so ``newsletter campaign validate`` can list them all at once.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from newsletter.core.languages import SOURCE_LANGUAGE, shipped_languages

CAMPAIGN_FILE = "campaign.toml"
MJML_FILE = "email.mjml"
TEXT_FILE = "email.txt"

TOP_KEYS = {
    "name",
    "subject",
    "preheader",
    "from",
    "topic",
    "deliver_by",
    "send_at",
    "sale",
    "wave",
    "track_clicks",
    "track_opens",
    "reward",
    "email",
    "language",
    "variant",
}
EMAIL_KEYS = {"background", "width"}
#: [email] width: narrower than a phone or wider than desktop clients' reading panes makes no sense
EMAIL_WIDTHS = range(320, 801)
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
REWARD_KEYS = {"pool", "prefix", "expires_in"}
SALE_KEYS = {"url", "public_at", "ends_at"}
WAVE_KEYS = {"name", "audience", "send_at"}
IMPLICIT_WAVE = "all"
#: ``[variant.<lang>]``: a language's own subject and preheader (its email is ``email.<lang>.mjml``)
VARIANT_TABLE = "variant"
VARIANT_KEYS = {"subject", "preheader"}
#: a variant's files beside email.mjml and email.txt: ``email.<lang>.mjml``, ``email.<lang>.txt``
_VARIANT_FILE = re.compile(r"email\.([^.]+)\.(mjml|txt)")
#: keys whose values end up in headers or on one line of an inbox: no control characters
ONE_LINE_KEYS = ("name", "subject", "preheader", "from")
#: Unicode's control characters (Cc) and its line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CHARACTER_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\x00": "NUL"}


def as_utc(value: datetime) -> datetime:
    """Aware datetime to naive UTC (the database convention); a naive one is taken as UTC."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Problem:
    """One finding; ``str()`` gives ``file:line:col: message`` like a compiler."""

    file: str
    line: int
    col: int
    message: str
    warning: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {'warning: ' if self.warning else ''}{self.message}"


@dataclass(frozen=True)
class Sale:
    url: str
    public_at: datetime  #: naive UTC: when everybody may buy
    ends_at: datetime  #: naive UTC


@dataclass(frozen=True)
class RewardSource:
    """``[reward]``: a code of the store's pool, or a generated code (prefix, days valid)."""

    pool: str | None = None
    prefix: str | None = None
    expires_in_days: int | None = None


@dataclass(frozen=True)
class WaveSource:
    name: str
    audience: str
    send_at: datetime  #: naive UTC


@dataclass
class CampaignSource:
    """A campaign folder as loaded: every time is naive UTC."""

    slug: str
    folder: Path
    name: str
    subject: str  #: a Jinja template
    preheader: str  #: a Jinja template
    sender: str | None  #: the optional ``from``; None means the configured FROM
    topic: str
    deliver_by: datetime | None
    sale: Sale | None
    waves: list[WaveSource]
    mjml: str  #: email.mjml source
    text: str | None  #: email.txt source, if the folder has one
    #: links go through /c/<token>/<n> (counted); off unless the file says so
    track_clicks: bool = False
    #: a 1x1 image at /o/<token> (opens; unreliable since Apple's Mail Privacy Protection)
    track_opens: bool = False
    #: each recipient gets a personal code ([reward]); None: no code
    reward: RewardSource | None = None
    #: [email]: the body's background colour and width in pixels (None: base.mjml's)
    background: str | None = None
    width: int | None = None
    locations: Locations = field(repr=False, default_factory=lambda: Locations(""))
    #: the language subject, preheader and email are written in (campaign.toml's ``language``)
    language: str = SOURCE_LANGUAGE
    #: this source's email files: email.mjml and email.txt, or a variant's email.<lang>.mjml and .txt
    mjml_file: str = MJML_FILE
    text_file: str = TEXT_FILE
    #: the TOML table each of subject and preheader comes from ("": the top level; "variant.de")
    key_tables: dict[str, str] = field(default_factory=dict)
    #: the per-language variants by language, each a source of its own files (a variant has none)
    variants: dict[str, CampaignSource] = field(default_factory=dict)

    def where(self, key: str) -> tuple[int, int]:
        """Line and column of the subject's or preheader's value this source uses."""
        return self.locations.value(key, self.key_tables.get(key, ""))


def variant_file(language: str, kind: str = "mjml") -> str:
    """``email.de.mjml`` (kind ``txt``: ``email.de.txt``)."""
    return f"email.{language}.{kind}"


def variant_files(folder: Path) -> list[tuple[str, str, Path]]:
    """Every ``email.<lang>.mjml`` and ``email.<lang>.txt`` of the folder as (lang, kind, path), by name."""
    found = []
    for path in sorted(folder.glob("email.*.*")):
        match = _VARIANT_FILE.fullmatch(path.name)
        if match and path.is_file():
            found.append((match.group(1), match.group(2), path))
    return found


class Locations:
    """Line and column of each ``key = value`` in a TOML file, by (table, index, key).

    tomllib keeps no positions, so a small line scanner finds them; good enough for the
    flat files campaigns are (tables ``[sale]`` and ``[[wave]]``, one key per line).
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
    _KEY = re.compile(r"""^(\s*)("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=\s*""")

    def __init__(self, text: str):
        self.keys: dict[tuple[str, int, str], tuple[int, int]] = {}
        self.tables: dict[tuple[str, int], int] = {}
        #: line and column of the last part of each table's header name (``de`` of ``[variant.de]``)
        self.headers: dict[tuple[str, int], tuple[int, int]] = {}
        table, index, counts = "", 0, {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = header.group(2)
                index = counts.get(table, 0)
                counts[table] = index + 1 if header.group(1) == "[[" else 1
                self.tables[(table, index)] = number
                self.headers[(table, index)] = (number, header.start(2) + table.rfind(".") + 2)
                continue
            key = self._KEY.match(line)
            if key:
                name = key.group(2).strip("\"'")
                self.keys.setdefault((table, index, name), (number, key.end() + 1))
                self.keys.setdefault((table, index, f"{name}:key"), (number, len(key.group(1)) + 1))

    def value(self, key: str, table: str = "", index: int = 0) -> tuple[int, int]:
        """Line and column where the value of ``key`` starts (1, 1 if not found)."""
        found = self.keys.get((table, index, key))
        if found:
            return found
        return self.tables.get((table, index), 1), 1

    def key(self, key: str, table: str = "", index: int = 0) -> tuple[int, int]:
        found = self.keys.get((table, index, f"{key}:key"))
        return found or (self.tables.get((table, index), 1), 1)


class _Reader:
    """Type checks with positions, collecting problems instead of raising."""

    def __init__(self, file: str, locations: Locations, problems: list[Problem]):
        self.file, self.locations, self.problems = file, locations, problems

    def error(self, message: str, key: str, table: str = "", index: int = 0, *, at_key: bool = False) -> None:
        line, col = (self.locations.key if at_key else self.locations.value)(key, table, index)
        self.problems.append(Problem(self.file, line, col, message))

    def unknown(self, data: dict, allowed: set[str], table: str = "", index: int = 0) -> None:
        where = (
            f"[{table}]" if table in ("sale", "reward", "email") else "[[wave]]" if table else "campaign.toml"
        )
        for key in data:
            if key not in allowed:
                self.error(
                    f"unknown key {key!r} in {where} (known: {', '.join(sorted(allowed))})",
                    key,
                    table,
                    index,
                    at_key=True,
                )

    def text(self, data: dict, key: str, table: str = "", index: int = 0, *, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                where = f" in [{table}]" if table in ("sale", "reward") else " in [[wave]]" if table else ""
                self.error(f"missing required key {key!r}{where}", key, table, index)
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"{key} must be a non-empty string", key, table, index)
            return None
        return value

    def flag(self, data: dict, key: str) -> bool:
        """A true/false key, false when absent."""
        value = data.get(key, False)
        if not isinstance(value, bool):
            self.error(f"{key} must be true or false (without quotes), got {value!r}", key)
            return False
        return value

    def time(
        self, data: dict, key: str, table: str = "", index: int = 0, *, required: bool
    ) -> datetime | None:
        value = data.get(key)
        if value is None:
            if required:
                where = f" in [{table}]" if table == "sale" else " in [[wave]]" if table else ""
                self.error(f"missing required key {key!r}{where}", key, table, index)
            return None
        if not isinstance(value, datetime):
            self.error(f"{key} must be a date and time like 2030-03-01T09:00:00+01:00", key, table, index)
            return None
        if value.tzinfo is None:
            self.error(f"{key} needs a UTC offset, e.g. {value.isoformat()}+00:00", key, table, index)
            return None
        return as_utc(value)


def control_character(text: str) -> str | None:
    """The first control or line-separator character in ``text``, described (None if there is none)."""
    match = _CONTROL.search(text)
    if match is None:
        return None
    char = match.group()
    name = _CHARACTER_NAMES.get(char) or unicodedata.name(char, "control character").lower()
    return f"U+{ord(char):04X} ({name})"


def read_utf8(path: Path, problems: list[Problem]) -> str | None:
    """A file's text; or None and a problem at its first byte that is not UTF-8 (or why it is unreadable)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(str(path), 1, 1, f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[start : exc.start].decode("utf-8")) + 1  # characters, as editors count them
        problems.append(Problem(str(path), line, col, f"not UTF-8 (byte 0x{data[exc.start]:02X})"))
        return None


def toml_problem(file: str, exc: tomllib.TOMLDecodeError) -> Problem:
    """A TOML syntax error with the line and column tomllib puts in its message."""
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)$", message)
    if match:
        return Problem(
            file, int(match.group(1)), int(match.group(2)), f"TOML: {message[: match.start()].strip()}"
        )
    if message.endswith("(at end of document)"):
        return Problem(file, 1, 1, f"TOML: {message}")
    return Problem(file, 1, 1, f"TOML: {message}")


def load_campaign(folder: Path, problems: list[Problem]) -> CampaignSource | None:
    """Read and check a campaign folder; None if it cannot be understood at all."""
    toml_path, mjml_path, text_path = folder / CAMPAIGN_FILE, folder / MJML_FILE, folder / TEXT_FILE
    toml_file = str(toml_path)
    if not folder.is_dir():
        problems.append(Problem(str(folder), 1, 1, "not a campaign folder"))
        return None
    if not toml_path.is_file():
        problems.append(Problem(toml_file, 1, 1, f"missing {CAMPAIGN_FILE}"))
        return None
    if not mjml_path.is_file():
        problems.append(Problem(str(mjml_path), 1, 1, f"missing {MJML_FILE}"))
    # every file is read before giving up on any, so one run reports all undecodable files
    raw = read_utf8(toml_path, problems)
    mjml = (read_utf8(mjml_path, problems) if mjml_path.is_file() else "") or ""
    text = read_utf8(text_path, problems) if text_path.is_file() else None
    if raw is None:
        return None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        problems.append(toml_problem(toml_file, exc))
        return None
    locations = Locations(raw)
    read = _Reader(toml_file, locations, problems)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", folder.resolve().name):
        problems.append(
            Problem(toml_file, 1, 1, "the folder name is the campaign's slug: use a-z, 0-9 and -")
        )

    read.unknown(data, TOP_KEYS)
    multiline = set()
    for key in ONE_LINE_KEYS:
        value = data.get(key)
        found = control_character(value) if isinstance(value, str) else None
        if found:
            read.error(f"{key} must be one line of text: it contains {found}", key)
            data[key] = _CONTROL.sub(" ", value)  # reported once; the other checks go on
            multiline.add(key)
    name = read.text(data, "name", required=True)
    subject = read.text(data, "subject", required=True)
    preheader = data.get("preheader", "")
    if not isinstance(preheader, str):
        read.error("preheader must be a string", "preheader")
        preheader = ""
    sender = read.text(data, "from", required=False)
    if sender is not None and "from" in multiline:
        sender = None
    elif sender is not None and "@" not in parseaddr(sender)[1]:
        read.error(f"from must be an address like 'Store <news@store.example>', got {sender!r}", "from")
    topic = read.text(data, "topic", required=True)
    deliver_by = read.time(data, "deliver_by", required=False)
    track_clicks, track_opens = read.flag(data, "track_clicks"), read.flag(data, "track_opens")

    sale = None
    if "sale" in data:
        if not isinstance(data["sale"], dict):
            read.error("sale must be a table: [sale]", "sale")
        else:
            sale_data = data["sale"]
            read.unknown(sale_data, SALE_KEYS, "sale")
            url = read.text(sale_data, "url", "sale", required=True)
            if url is not None and not re.match(r"https?://[^\s/]+", url):
                read.error(f"sale url must be an absolute http(s) URL, got {url!r}", "url", "sale")
            public_at = read.time(sale_data, "public_at", "sale", required=True)
            ends_at = read.time(sale_data, "ends_at", "sale", required=True)
            if url and public_at and ends_at:
                sale = Sale(url, public_at, ends_at)

    reward = _reward(data, read)
    background, width = _email(data, read)
    waves = _waves(data, read)
    language = _language(data, read)
    variant_texts = _variant_tables(data, read, language)
    if not (name and subject and topic):
        return None
    source = CampaignSource(
        slug=folder.resolve().name,
        folder=folder,
        name=name,
        subject=subject,
        preheader=preheader,
        sender=sender,
        topic=topic,
        deliver_by=deliver_by,
        sale=sale,
        waves=waves,
        mjml=mjml,
        text=text,
        track_clicks=track_clicks,
        track_opens=track_opens,
        reward=reward,
        background=background,
        width=width,
        locations=locations,
        language=language,
    )
    source.variants = _variants(source, variant_texts, problems)
    return source


def _language(data: dict[str, Any], read: _Reader) -> str:
    """``language``: what email.mjml, subject and preheader are written in (default: English)."""
    value = data.get("language", SOURCE_LANGUAGE)
    if value not in shipped_languages():
        read.error(f"unknown language {value!r} (shipped: {', '.join(shipped_languages())})", "language")
        return SOURCE_LANGUAGE
    return value


def _variant_tables(data: dict[str, Any], read: _Reader, language: str) -> dict[str, dict[str, str]]:
    """``[variant.<lang>]`` tables: language -> its subject and preheader (checked like the top level's)."""
    tables = data.get(VARIANT_TABLE)
    if tables is None:
        return {}
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        read.error("variant must hold one table per language: [variant.de] with subject = ...", VARIANT_TABLE)
        return {}
    found: dict[str, dict[str, str]] = {}
    shipped = ", ".join(lang for lang in shipped_languages() if lang != language)
    for lang, table in tables.items():
        where = f"{VARIANT_TABLE}.{lang}"
        if lang not in shipped_languages():
            message = f"unknown language {lang!r} in [variant.{lang}] (shipped: {shipped})"
            read.problems.append(Problem(read.file, *_table_name_at(read.locations, lang), message))
            continue
        if lang == language:
            message = (
                f"[variant.{lang}]: {lang} is the language of subject and email.mjml themselves "
                f"(language = {language!r})"
            )
            read.problems.append(Problem(read.file, *_table_name_at(read.locations, lang), message))
            continue
        unknown = [key for key in table if key not in VARIANT_KEYS]
        for key in unknown:
            read.error(
                f"unknown key {key!r} in [variant.{lang}] (known: {', '.join(sorted(VARIANT_KEYS))})",
                key,
                where,
                at_key=True,
            )
        texts = {}
        for key in ("subject", "preheader"):
            value = table.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                read.error(f"{key} must be a non-empty string", key, where)
                continue
            if control_character(value):
                read.error(
                    f"{key} must be one line of text: it contains {control_character(value)}", key, where
                )
                continue
            texts[key] = value
        found[lang] = texts
    return found


def _table_name_at(locations: Locations, lang: str) -> tuple[int, int]:
    """Where a variant's language is written: ``de`` of ``[variant.de]`` (or of ``de = {...}``)."""
    found = locations.headers.get((f"{VARIANT_TABLE}.{lang}", 0))
    return found or locations.key(lang, VARIANT_TABLE)


def _variants(
    source: CampaignSource, texts: dict[str, dict[str, str]], problems: list[Problem]
) -> dict[str, CampaignSource]:
    """``email.<lang>.mjml`` (and its .txt) with ``[variant.<lang>]``: one source per language."""
    folder, toml = source.folder, str(source.folder / CAMPAIGN_FILE)
    shipped = ", ".join(shipped_languages())
    files: dict[str, dict[str, Path]] = {}
    for lang, kind, path in variant_files(folder):
        if lang not in shipped_languages():
            message = f"unknown language {lang!r} in the file name (shipped: {shipped})"
            problems.append(Problem(str(path), 1, 1, message))
        elif lang == source.language:
            message = (
                f"email.{kind} is already the {lang} email (campaign.toml language = {lang!r}): "
                f"remove {path.name} or set language to the one email.{kind} is written in"
            )
            problems.append(Problem(str(path), 1, 1, message))
        else:
            files.setdefault(lang, {})[kind] = path
    variants: dict[str, CampaignSource] = {}
    for lang in sorted(files.keys() | texts.keys()):
        paths = files.get(lang, {})
        table = f"{VARIANT_TABLE}.{lang}"
        if "mjml" not in paths:
            if "txt" in paths:
                problems.append(
                    Problem(str(paths["txt"]), 1, 1, f"no {variant_file(lang)} for this text part")
                )
            else:
                message = f"[variant.{lang}] has no {variant_file(lang)} beside campaign.toml"
                problems.append(Problem(toml, *_table_name_at(source.locations, lang), message))
            continue
        mjml = read_utf8(paths["mjml"], problems) or ""
        text = read_utf8(paths["txt"], problems) if "txt" in paths else None
        own = texts.get(lang, {})
        for key, value in (("subject", source.subject), ("preheader", source.preheader)):
            if key not in own and value:
                message = (
                    f"no {key} for {lang} ([variant.{lang}] {key} = ... in campaign.toml): "
                    f"its readers get the {source.language} one"
                )
                problems.append(Problem(str(paths["mjml"]), 1, 1, message, warning=True))
        variants[lang] = replace(
            source,
            language=lang,
            subject=own.get("subject", source.subject),
            preheader=own.get("preheader", source.preheader),
            mjml=mjml,
            text=text,
            mjml_file=paths["mjml"].name,
            text_file=variant_file(lang, "txt"),
            key_tables={key: table for key in own},
            variants={},
        )
    return variants


def _waves(data: dict[str, Any], read: _Reader) -> list[WaveSource]:
    if "wave" not in data:
        send_at = read.time(data, "send_at", required=False)
        if send_at is None and "send_at" not in data:
            read.error("missing send_at: give a top-level send_at or [[wave]] tables", "name")
        return [WaveSource(IMPLICIT_WAVE, "all", send_at)] if send_at else []
    if "send_at" in data:
        read.error("send_at belongs in each [[wave]] when waves are given", "send_at")
    if not isinstance(data["wave"], list) or not data["wave"]:
        read.error("wave must be an array of tables: [[wave]]", "wave")
        return []
    waves, seen = [], set()
    for index, wave in enumerate(data["wave"]):
        read.unknown(wave, WAVE_KEYS, "wave", index)
        name = read.text(wave, "name", "wave", index, required=True)
        audience = read.text(wave, "audience", "wave", index, required=True)
        send_at = read.time(wave, "send_at", "wave", index, required=True)
        if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,49}", name):
            read.error(f"wave name must use a-z, 0-9, - and _ (got {name!r})", "name", "wave", index)
            name = None
        if name in seen:
            read.error(f"two waves are named {name!r}", "name", "wave", index)
        seen.add(name)
        if name and audience and send_at:
            waves.append(WaveSource(name, audience, send_at))
    return waves


_POOL = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
_PREFIX = re.compile(r"[A-Z0-9]{1,20}")
_DAYS = re.compile(r"([1-9][0-9]{0,3})d")


def _reward(data: dict[str, Any], read: _Reader) -> RewardSource | None:
    """``[reward]``: ``pool = "NAME"``, or ``prefix`` and ``expires_in`` ("30d") for generated codes."""
    if "reward" not in data:
        return None
    if not isinstance(data["reward"], dict):
        read.error("reward must be a table: [reward]", "reward")
        return None
    table = data["reward"]
    read.unknown(table, REWARD_KEYS, "reward")
    if "pool" in table:
        if "prefix" in table or "expires_in" in table:
            read.error("[reward] takes either pool or prefix and expires_in, not both", "pool", "reward")
            return None
        pool = read.text(table, "pool", "reward", required=True)
        if pool is None:
            return None
        if not _POOL.fullmatch(pool):
            read.error(f"pool must be a pool name (a-z, 0-9, - and _), got {pool!r}", "pool", "reward")
            return None
        return RewardSource(pool=pool)
    prefix = read.text(table, "prefix", "reward", required=True)
    expires_in = read.text(table, "expires_in", "reward", required=True)
    if prefix is not None and not _PREFIX.fullmatch(prefix):
        read.error(f"prefix must be 1 to 20 of A-Z and 0-9, got {prefix!r}", "prefix", "reward")
        prefix = None
    days = _DAYS.fullmatch(expires_in) if expires_in is not None else None
    if expires_in is not None and days is None:
        read.error(
            f'expires_in must be a number of days like "30d", got {expires_in!r}', "expires_in", "reward"
        )
    if prefix is None or days is None:
        return None
    return RewardSource(prefix=prefix, expires_in_days=int(days.group(1)))


def _email(data: dict[str, Any], read: _Reader) -> tuple[str | None, int | None]:
    """``[email]``: ``background = "#rrggbb"`` (or ``#rgb``) and ``width`` in pixels (320 to 800)."""
    table = data.get("email")
    if table is None:
        return None, None
    if not isinstance(table, dict):
        read.error("email must be a table: [email]", "email")
        return None, None
    read.unknown(table, EMAIL_KEYS, "email")
    background, width = table.get("background"), table.get("width")
    if background is not None and not (isinstance(background, str) and _COLOUR.fullmatch(background)):
        read.error(f'background must be a colour like "#f4f4f4", got {background!r}', "background", "email")
        background = None
    if width is not None and (
        isinstance(width, bool) or not isinstance(width, int) or width not in EMAIL_WIDTHS
    ):
        read.error(
            f"width must be a number of pixels from {EMAIL_WIDTHS.start} to {EMAIL_WIDTHS.stop - 1} "
            f"(without quotes or px), got {width!r}",
            "width",
            "email",
        )
        width = None
    return background, width
