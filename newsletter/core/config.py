"""Settings: defaults, then ``instance/config.toml``, then ``NEWSLETTER_*`` variables.

Every value is parsed and checked here, at start-up, so that a typo is a one-line
error naming the variable instead of a surprise in a worker hours later. The result is a
frozen, typed ``Settings``: code reads ``settings.smtp_url``, and a misspelt name is caught by
``tests/test_settings_typed.py`` before anything runs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "NEWSLETTER_"


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names it."""


def _str(value: Any) -> str:
    return str(value).strip()


def _int(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if number < 0:
        raise ValueError("expected a number >= 0")
    return number


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("expected a number >= 1")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true or false")


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if str(v))
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _url(*schemes: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if not text:
            return ""
        scheme = urlsplit(text).scheme.split("+")[0]
        if scheme not in schemes:
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return text

    return parse


def _store_id(value: Any) -> str:
    """This store's id as partner stores know it: a-z, 0-9 and -."""
    text = str(value).strip()
    if text and not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", text):
        raise ValueError("expected an id of a-z, 0-9 and - (at most 50 characters)")
    return text


#: Settings that moved elsewhere: naming them is an error that says where they went.
RETIRED = {"PARTNERS": "partner stores live in the database now: use 'newsletter partners add'"}


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _caps(value: Any) -> tuple[tuple[int, int], ...]:
    """``"1/20h, 3/7d"``: at most COUNT marketing emails per WINDOW (s, m, h or d)."""
    rules = []
    for part in _list(value):
        match = re.fullmatch(r"(\d+)\s*(?:per|/)\s*(\d+)\s*([smhd])", part.strip())
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise ValueError(f'expected rules like "1/20h, 3/7d", got {part!r}')
        rules.append((int(match.group(1)), int(match.group(2)) * _UNITS[match.group(3)]))
    return tuple(rules)


def _quiet_hours(value: Any) -> tuple[int, int] | None:
    """``"21:00-08:00"`` as minutes after midnight (start, end); empty for none."""
    text = str(value).strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text)
    if not match:
        raise ValueError('expected "HH:MM-HH:MM", e.g. "21:00-08:00"')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError("hours 0-23, minutes 0-59")
    return h1 * 60 + m1, h2 * 60 + m2


def _rate(value: Any) -> tuple[int, int]:
    """``"20/60"`` means 20 events per 60 seconds."""
    try:
        count, seconds = (int(part) for part in str(value).split("/"))
    except ValueError:
        raise ValueError('expected "COUNT/SECONDS", e.g. "20/60"') from None
    if count < 1 or seconds < 1:
        raise ValueError("count and seconds must be positive")
    return count, seconds


def _fraction(value: Any) -> float:
    """A rate as a fraction: ``0.003`` or ``"0.3%"``."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError('expected a fraction like 0.003 or a percentage like "0.3%"') from None
    if not 0 <= number <= 1:
        raise ValueError("expected a rate between 0 and 1 (0% and 100%)")
    return number


def _address(value: Any) -> str:
    """An email address without a display name (``bounces@store.example``), or empty."""
    text = str(value).strip()
    if text and (text.count("@") != 1 or any(ch in text for ch in ' <>"\r\n')):
        raise ValueError("expected a bare address like bounces@store.example (or empty)")
    return text


def _colour(value: Any) -> str:
    """A hex colour, ``#1a7f37`` or ``#1a7``, as lower-case ``#rrggbb`` (it goes into CSS and MJML)."""
    text = str(value).strip().lower()
    if not re.fullmatch(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})", text):
        raise ValueError("expected a hex colour like #1a7f37")
    return "#" + "".join(c * 2 for c in text[1:]) if len(text) == 4 else text


def _logo_url(value: Any) -> str:
    """The logo's address: https, or http on loopback (to test); empty for the store's name as text."""
    text = str(value).strip()
    if text and not (
        urlsplit(text).scheme == "https"
        and urlsplit(text).hostname
        or urlsplit(text).scheme == "http"
        and is_loopback(text)
    ):
        raise ValueError("expected an https:// URL (http:// only on loopback)")
    return text


def _sender(value: Any) -> str:
    """``news@store.example`` (shown as STORE_NAME) or ``Name <news@store.example>``."""
    text = str(value).strip()
    local, _, domain = parseaddr(text)[1].partition("@")
    if not local or not domain or "@" in domain or any(ch in local + domain for ch in ' <>"'):
        raise ValueError("expected an address like news@store.example or 'Store <news@store.example>'")
    return text


def _token(value: Any) -> str:
    """A shared secret: empty (off) or long enough not to be guessed."""
    text = str(value).strip()
    if text and len(text) < 16:
        raise ValueError("expected at least 16 characters (or empty)")
    return text


@dataclass(frozen=True)
class Setting:
    """How one setting is read: its parser, its default (as written in a file) and its doc."""

    parse: Callable[[Any], Any]
    default: Any
    doc: str


def _setting(parse: Callable[[Any], Any], default: Any, doc: str, *, secret: bool = False) -> Any:
    """A field of Settings: its parsed default, with the parser and the doc in its metadata.

    A secret is left out of the repr, so that logging the settings shows no key.
    """
    return field(default=parse(default), repr=not secret, metadata={"setting": Setting(parse, default, doc)})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting the engine knows, parsed and checked; read-only once built.

    A field's key is its name in upper case (``from_`` is ``FROM``): ``NEWSLETTER_SMTP_URL`` in the
    environment, ``smtp_url`` in ``instance/config.toml``.
    """

    secret_key: str = _setting(_str, "", "signs links and sessions; required", secret=True)
    secret_key_fallbacks: tuple[str, ...] = _setting(
        _list, "", "old secret keys, comma-separated: links they signed keep working", secret=True
    )
    database_url: str = _setting(
        _url("sqlite", "postgresql"), "", "SQLAlchemy URL; default: SQLite file in the instance folder"
    )
    redis_url: str = _setting(
        _url("redis", "rediss", "unix"), "redis://localhost:6379/0", "Redis for queues and counters"
    )
    smtp_url: str = _setting(
        _url("smtp", "smtps"),
        "",
        "smtp://user:pass@host:587?starttls=true or smtps://...; unset: Maildir outbox",
    )
    smtp_timeout: int = _setting(_int, 30, "seconds before an SMTP operation gives up")
    outbox_dir: str = _setting(
        _str, "", "Maildir outbox used when SMTP_URL is unset; default: instance/outbox"
    )
    base_url: str = _setting(
        _url("http", "https"),
        "http://localhost:8000",  # where `make run` serves: the links of a first try lead somewhere
        "public address used in links inside emails; https (RFC 8058), or http on loopback to test",
    )
    from_: str = _setting(
        _sender,
        "news@store.example",
        "From of every email: a bare address is shown as STORE_NAME; 'Name <address>' names its own",
    )
    postal_address: str = _setting(
        _str, "1 Example Street, Example City", "postal address printed in marketing mail (CAN-SPAM)"
    )
    store_name: str = _setting(_str, "Our store", "the store's name as subscribers know it")
    default_language: str = _setting(
        _str, "en", "language of pages and mail when neither the subscriber nor the browser names one"
    )
    wording_dir: str = _setting(
        _str,
        "",
        "consent wording files here (<kind>/<version>.<lang>.txt, <kind>/current) win over the shipped "
        "ones (docs/languages.md); default: instance/wording",
    )
    confirm_max_age_days: int = _setting(_int, 7, "days a confirmation link stays valid")
    signup_rate_limit: tuple[int, int] = _setting(_rate, "20/60", "signups per IP: COUNT/SECONDS")
    confirmations_per_address: int = _setting(
        _int, 3, "confirmation emails per address per 24 hours, whatever the IP"
    )
    welcome_email: bool = _setting(
        _bool, True, "send a welcome email (topics, frequency, preferences link) once, after confirmation"
    )
    order_invitation: bool = _setting(
        _bool,
        True,
        "a first order's thank-you invites a non-subscriber to the newsletter once, by a link "
        "they must confirm on our page (never subscribes them)",
    )
    check_deliverability: bool = _setting(
        _bool, False, "look up the domain's MX records at signup (needs DNS)"
    )
    api_token: str = _setting(
        _token,
        "",
        "bearer token of the store's API (/api/...); at least 16 characters; empty: API off",
        secret=True,
    )
    early_access_secret: str = _setting(
        _token,
        "",
        "HMAC key of early-access codes (share it with the store); empty: derived from SECRET_KEY",
        secret=True,
    )
    reward_code_secret: str = _setting(
        _token,
        "",
        "HMAC key of generated reward codes (share it with the store); empty: derived from SECRET_KEY",
        secret=True,
    )
    early_access_code_minutes: int = _setting(
        _int, 15, "minutes an early-access code is valid after the click"
    )
    marketing_caps: tuple[tuple[int, int], ...] = _setting(
        _caps, "1/20h, 3/7d, 8/30d", "store-wide frequency caps for marketing mail; all must hold"
    )
    quiet_hours: tuple[int, int] | None = _setting(
        _quiet_hours, "21:00-08:00", "no marketing mail in these hours of the subscriber's time zone"
    )
    send_rate: int = _setting(
        _int, 0, "marketing messages per second across all workers; 0 = as fast as the relay takes"
    )
    batch_size: int = _setting(_int, 1000, "recipients per sending job (cut into SEND_CONNECTIONS slices)")
    send_connections: int = _setting(
        _int, 4, "SMTP connections (threads) per sending job, each with its own slice; 1 on SQLite"
    )
    send_mark_every: int = _setting(
        _positive_int,
        20,
        "sent rows written to the ledger per statement (a worker killed mid-slice leaves 1 uncertain "
        "row, or up to this + 1 if Redis lost the slice's progress note)",
    )
    pause_after_errors: int = _setting(
        _int, 20, "consecutive send errors after which a campaign pauses itself"
    )
    stale_claim_seconds: int = _setting(
        _int, 60, "a batch whose worker stopped beating this long is taken up again"
    )
    tick_interval: int = _setting(
        _int, 5, "seconds between ticks: due waves, deferred mail, dead batches, unsent transactional mail"
    )
    list_id: str = _setting(_str, "", "List-Id header domain part; default: the From address's domain")
    store_id: str = _setting(
        _store_id, "", "this store's id in partner exchanges (partners register us under it)"
    )
    partner_max_body_mb: int = _setting(
        _positive_int, 64, "largest contact file a partner may POST to the API, in MiB (more: 413)"
    )
    partner_api_rate_limit: tuple[int, int] = _setting(
        _rate, "60/60", "partner API requests per partner: COUNT/SECONDS (more: 429 with Retry-After)"
    )
    partner_invites_per_day: int = _setting(
        _positive_int, 1000, "invitations sent per UTC day because of one partner; the rest wait a day"
    )
    # deliverability: DKIM, bounces, complaints, webhooks, automatic protection (docs/deliverability.md)
    dkim_selector: str = _setting(_str, "", "DKIM selector (s=); empty: the engine does not sign")
    dkim_domain: str = _setting(_str, "", "DKIM signing domain (d=); default: the From address's domain")
    dkim_key_file: str = _setting(
        _str, "", "PEM private key(s) for DKIM; default: instance/dkim/SELECTOR.pem (dkim keygen writes it)"
    )
    bounce_address: str = _setting(
        _address, "", "bounce mailbox; each message's Return-Path becomes bounces+TOKEN@domain (VERP)"
    )
    soft_bounce_limit: int = _setting(
        _positive_int, 3, "soft bounces of one address within SOFT_BOUNCE_DAYS that suppress it"
    )
    soft_bounce_days: int = _setting(_positive_int, 30, "the window of SOFT_BOUNCE_LIMIT, in days")
    max_complaint_rate: float = _setting(
        _fraction, "0.3%", "a campaign pauses itself above this complaint rate (Gmail/Yahoo: 0.3%)"
    )
    max_bounce_rate: float = _setting(_fraction, "5%", "a campaign pauses itself above this hard-bounce rate")
    rate_min_sample: int = _setting(
        _positive_int, 500, "delivered messages a campaign needs before its rates can pause it"
    )
    sns_topic_arns: tuple[str, ...] = _setting(
        _list, "", "Amazon SNS topics whose SES notifications /webhooks/ses accepts, comma-separated"
    )
    sns_cert_dir: str = _setting(
        _str,
        "",
        "SNS signing certificates by URL hash (one placed there is trusted); default: instance/sns-certs",
    )
    mailgun_signing_key: str = _setting(
        _token, "", "Mailgun's HTTP webhook signing key; empty: /webhooks/mailgun off", secret=True
    )
    # the dashboard (/admin, docs/dashboard.md)
    admin_login_failures: int = _setting(
        _positive_int, 5, "failed sign-ins of one account within ADMIN_LOCKOUT_MINUTES that lock it out"
    )
    admin_login_ip_failures: int = _setting(
        _positive_int, 20, "failed sign-ins from one IP address within ADMIN_LOCKOUT_MINUTES that lock it out"
    )
    admin_lockout_minutes: int = _setting(
        _positive_int, 15, "how long failures are counted, and a lock-out lasts, in minutes"
    )
    admin_session_idle_minutes: int = _setting(
        _positive_int, 480, "an /admin session ends after this many minutes without a request"
    )
    campaigns_dir: str = _setting(
        _str, "campaigns", "the campaign folders /admin/files shows and `campaign validate` and `list` check"
    )
    wtf_csrf_enabled: bool = _setting(_bool, True, "CSRF protection on forms (never turn off in production)")
    queue_sync: bool = _setting(
        _bool, False, "run jobs in the web process instead of RQ (demo without Redis)"
    )
    # partners over the wire: push, pull, scheduled sync (docs/partners.md)
    partner_timeout: int = _setting(
        _positive_int, 30, "seconds a partner's engine may take to connect or to send the next bytes"
    )
    partner_retries: int = _setting(
        _int, 3, "retries (with backoff) of a push or pull that met a network error or a 502/503/504"
    )
    partner_lock_seconds: int = _setting(
        _positive_int, 120, "a partner's sync lock expires this long after its holder stopped renewing it"
    )
    partner_spool_dir: str = _setting(
        _str, "", "files of push and pull kept until they are through (to resume); default: instance/partners"
    )
    # the store's look (docs/theming.md)
    overrides_dir: str = _setting(
        _str, "", "templates here win over the shipped ones (web/..., email/...); default: instance/overrides"
    )
    logo_url: str = _setting(
        _logo_url, "", "the logo in the header of pages and emails (https); empty: the store's name"
    )
    logo_width: int = _setting(_positive_int, 160, "the logo's width in emails, in pixels")
    brand_colour: str = _setting(_colour, "#1a7f37", "buttons, links and focus rings (hex, e.g. #1a7f37)")
    header_colour: str = _setting(_colour, "#ffffff", "background of the header with the logo (hex)")


def key_of(name: str) -> str:
    """A field's key in files and the environment: ``smtp_url`` -> ``SMTP_URL``, ``from_`` -> ``FROM``."""
    return name.rstrip("_").upper()


#: Every setting by key (``SMTP_URL``), in field order. Unknown keys in the instance file are errors.
SETTINGS: dict[str, Setting] = {key_of(f.name): f.metadata["setting"] for f in fields(Settings)}
#: Key -> field name.
FIELDS: dict[str, str] = {key_of(f.name): f.name for f in fields(Settings)}


def is_loopback(url: str) -> bool:
    """True if the URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def example_identity(settings: Settings) -> list[str]:
    """The shipped example values still in FROM and POSTAL_ADDRESS: mail that names a store that
    isn't this one (and a postal address CAN-SPAM would not accept). Empty when both are the store's."""
    defaults = {field.name: field.default for field in fields(Settings)}
    return [
        f"{name.upper().rstrip('_')} is still the example {value!r}"
        for name, value in (("from_", settings.from_), ("postal_address", settings.postal_address))
        if value == defaults[name] or (name == "from_" and parseaddr(value)[1] == defaults[name])
    ]


def insecure_base_url(settings: Settings) -> str | None:
    """Why BASE_URL cannot carry an RFC 8058 List-Unsubscribe (which wants https), or None."""
    url = settings.base_url
    if urlsplit(url).scheme == "https":
        return None
    return f"BASE_URL {url} is not https: RFC 8058 wants an https List-Unsubscribe link"


def load_settings(
    instance_path: str | Path,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults, then the instance file, the environment and ``overrides`` (keys as in SETTINGS).

    Raises ConfigError, one line naming the key, on an unknown key or a bad value.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}

    config_file = Path(instance_path) / "config.toml"
    if config_file.exists():
        try:
            data = tomllib.loads(config_file.read_text("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
        for key, value in data.items():
            name = key.upper()
            if name in RETIRED:
                raise ConfigError(f"{config_file}: {key}: {RETIRED[name]}")
            if name not in SETTINGS:
                raise ConfigError(f"{config_file}: unknown setting {key!r}")
            raw[name] = (value, f"{config_file}: {key}")

    for name, value in environ.items():
        # NEWSLETTER_TEST_* and NEWSLETTER_BENCH_* belong to the test suite and the benchmarks,
        # which start engine processes in the caller's environment.
        if (
            not name.startswith(PREFIX)
            or name in (PREFIX + "INSTANCE_PATH",)
            or name.startswith((PREFIX + "TEST_", PREFIX + "BENCH_"))
        ):
            continue
        key = name[len(PREFIX) :]
        if key in RETIRED:
            raise ConfigError(f"{name}: {RETIRED[key]}")
        if key not in SETTINGS:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(SETTINGS))})")
        raw[key] = (value, name)

    for key, value in (overrides or {}).items():
        if key in RETIRED:
            raise ConfigError(f"{key}: {RETIRED[key]}")
        if key not in SETTINGS:
            raise ConfigError(f"{key}: unknown setting (known: {', '.join(sorted(SETTINGS))})")
        if value is not None:  # None: the value from the layers below
            raw[key] = (value, key)

    values: dict[str, Any] = {}
    for key, (value, origin) in raw.items():
        try:
            values[FIELDS[key]] = SETTINGS[key].parse(value)
        except ValueError as exc:
            label = origin if not origin.isupper() or origin.startswith(PREFIX) else PREFIX + origin
            raise ConfigError(f"{label}: {exc} (got {value!r})") from None

    if not values.get("secret_key"):
        raise ConfigError(f"{PREFIX}SECRET_KEY is missing: set it, or run 'newsletter init'")
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{Path(instance_path) / 'newsletter.sqlite3'}"
    if not values.get("outbox_dir"):
        values["outbox_dir"] = str(Path(instance_path) / "outbox")
    if not values.get("partner_spool_dir"):
        values["partner_spool_dir"] = str(Path(instance_path) / "partners")
    if values.get("overrides_dir") and not Path(values["overrides_dir"]).is_dir():
        raise ConfigError(f"{PREFIX}OVERRIDES_DIR: no such folder {values['overrides_dir']!r}")
    if not values.get("overrides_dir"):
        values["overrides_dir"] = str(Path(instance_path) / "overrides")
    if values.get("wording_dir") and not Path(values["wording_dir"]).is_dir():
        raise ConfigError(f"{PREFIX}WORDING_DIR: no such folder {values['wording_dir']!r}")
    if not values.get("wording_dir"):
        values["wording_dir"] = str(Path(instance_path) / "wording")
    if values.get("dkim_selector") and not values.get("dkim_key_file"):
        values["dkim_key_file"] = str(Path(instance_path) / "dkim" / f"{values['dkim_selector']}.pem")
    return Settings(**values)
