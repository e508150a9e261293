"""``newsletter dkim keygen`` and ``newsletter dns check``: the keys and DNS records a sender needs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # annotations only: the settings module is light, but keep --help lean
    from newsletter.core.config import Settings

#: a selector is a DNS label (or dot-separated labels): letters, digits, hyphens
SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
#: SPF include of relays whose host name says who they are
RELAY_SPF = {
    "amazonaws.com": "include:amazonses.com",
    "mailgun.org": "include:mailgun.org",
    "sendgrid.net": "include:sendgrid.net",
    "postmarkapp.com": "include:spf.mtasv.net",
    "sparkpostmail.com": "include:sparkpostmail.com",
    "mandrillapp.com": "include:spf.mandrillapp.com",
    "brevo.com": "include:spf.brevo.com",
    "gmail.com": "include:_spf.google.com",
    "office365.com": "include:spf.protection.outlook.com",
}


def _settings() -> Settings:
    from newsletter.core.config import ConfigError, load_settings
    from newsletter.core.runtime import default_instance_path

    try:
        return load_settings(default_instance_path())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None


def _key_path(settings: Settings, selector: str) -> Path:
    """Where SELECTOR's RSA key lives: DKIM_KEY_FILE for the configured selector, else instance/dkim/."""
    from newsletter.core.runtime import default_instance_path

    if selector == settings.dkim_selector and settings.dkim_key_file:
        return Path(settings.dkim_key_file)
    return default_instance_path() / "dkim" / f"{selector}.pem"


def _zone_line(name: str, value: str) -> str:
    from newsletter.mail.dkim import txt_strings

    return f"{name}. IN TXT " + " ".join(f'"{s}"' for s in txt_strings(value))


@click.group()
def dkim() -> None:
    """DKIM keys: the engine signs every message once a selector is set."""


@dkim.command("keygen")
@click.option("--selector", required=True, help="The DKIM selector (s=), e.g. news2026.")
@click.option("--algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True)
@click.option("--domain", help="The signing domain (d=); default: DKIM_DOMAIN, else the From domain.")
@click.option("--force", is_flag=True, help="Replace an existing key (the old DNS record stops verifying).")
def keygen(selector: str, algorithm: str, domain: str | None, force: bool) -> None:
    """Write a private key into the instance folder and print the DNS TXT record to publish.

    RSA-2048 is the key receivers verify. An Ed25519 key made with the same --selector signs
    beside it, under selector SELECTOR-ed25519 (RFC 8463).
    """
    from newsletter.mail import dkim as mail_dkim

    if not SELECTOR.match(selector):
        raise click.ClickException(f"selector {selector!r}: use letters, digits and hyphens (a DNS label)")
    settings = _settings()
    domain = (domain or mail_dkim.signing_domain(settings)).lower()
    path = _key_path(settings, selector)
    dns_selector = selector
    if algorithm == "ed25519":
        path, dns_selector = mail_dkim.ed25519_path(path), selector + mail_dkim.ED25519_SUFFIX
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; --force replaces it (publish the new record first)")
    pem = mail_dkim.generate_key(algorithm)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.replace(tmp, path)  # whole or nothing
    key = mail_dkim.load_key(path, dns_selector)
    record = mail_dkim.public_record(key)
    click.echo(f"wrote {path} ({'RSA-2048' if algorithm == 'rsa' else 'Ed25519'}, mode 0600)")
    click.echo("\nPublish this DNS TXT record (zone-file form; strings of at most 255 characters):")
    click.echo(f"  {_zone_line(f'{dns_selector}._domainkey.{domain}', record)}")
    click.echo("\nThen set (environment or instance/config.toml):")
    click.echo(f"  NEWSLETTER_DKIM_SELECTOR={selector}")
    if domain != mail_dkim.signing_domain(settings).lower() or settings.dkim_domain:
        click.echo(f"  NEWSLETTER_DKIM_DOMAIN={domain}")
    default = mail_dkim.ed25519_path(_key_path(settings, selector)) if algorithm == "ed25519" else None
    if settings.dkim_key_file and selector != settings.dkim_selector:
        click.echo(f"  NEWSLETTER_DKIM_KEY_FILE={path}")
    if default is not None and not _key_path(settings, selector).exists():
        click.echo(
            f"(no RSA key for {selector} yet: the Ed25519 key signs only beside one; run keygen for it)"
        )


@click.group()
def dns() -> None:
    """The DNS records the sending domain needs."""


def _aligned(a: str, b: str) -> bool:
    """Relaxed alignment (DMARC): the same domain, or one a subdomain of the other."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _spf_hint(settings: Settings) -> tuple[str, str]:
    """The SPF record to publish, and a note on where its mechanism comes from."""
    from urllib.parse import urlsplit

    host = (urlsplit(settings.smtp_url).hostname or "") if settings.smtp_url else ""
    if not host:
        return "v=spf1 mx ~all", "no SMTP_URL: list the hosts that send for this domain"
    for suffix, include in RELAY_SPF.items():
        if host == suffix or host.endswith("." + suffix):
            return f"v=spf1 {include} ~all", f"the relay {host} publishes {include.partition(':')[2]}"
    return f"v=spf1 a:{host} ~all", f"or ip4:/ip6: of the relay {host}, or its provider's include:"


@dns.command("check")
@click.option("--domain", help="The From domain to check (default: that of FROM).")
@click.option("--nameserver", help="Ask this resolver (IP[:PORT]) instead of the system's.")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds per DNS query.")
def check(domain: str | None, nameserver: str | None, timeout: float) -> None:
    """Print the SPF, DKIM and DMARC records the domain needs; where DNS answers, what is published."""
    from newsletter.mail import dkim as mail_dkim
    from newsletter.mail.message import domain_of

    settings = _settings()
    from_domain = (domain or domain_of(settings.from_)).lower()
    return_domain = (domain_of(settings.bounce_address) if settings.bounce_address else from_domain).lower()
    records: list[tuple[str, str, str, str | None]] = []  # (what, name, expected value, alignment note)

    spf_note = (
        f"aligned: Return-Path domain {return_domain} and From domain {from_domain}"
        if _aligned(return_domain, from_domain)
        else f"NOT aligned: Return-Path domain {return_domain} vs From domain {from_domain}"
    )
    spf, spf_hint = _spf_hint(settings)
    records.append(("SPF", return_domain, spf, f"{spf_hint}; {spf_note}"))

    keys: list[mail_dkim.Key] = []
    if not settings.dkim_selector:
        click.echo("DKIM: off (NEWSLETTER_DKIM_SELECTOR unset); many relays sign for you")
    else:
        try:
            keys = mail_dkim.signer_for(settings).keys
        except mail_dkim.DKIMError as exc:
            click.echo(f"DKIM: {exc}")
        d = mail_dkim.signing_domain(settings).lower()
        note = (
            f"aligned: d={d} and From domain {from_domain}"
            if _aligned(d, from_domain)
            else f"NOT aligned: d={d} vs From domain {from_domain}"
        )
        for key in keys:
            records.append(
                (
                    f"DKIM ({key.algorithm})",
                    f"{key.selector}._domainkey.{d}",
                    mail_dkim.public_record(key),
                    note,
                )
            )
    dmarc = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{from_domain}; adkim=r; aspf=r"
    records.append(
        ("DMARC", f"_dmarc.{from_domain}", dmarc, "start with p=none, read the reports, then quarantine")
    )

    lookup = _resolver(nameserver, timeout)
    dns_down: str | None = None
    for what, name, expected, note in records:
        click.echo(f"\n{what}: {_zone_line(name, expected)}")
        if note:
            click.echo(f"  {note}")
        if dns_down is None:
            try:
                published = lookup(name)
            except _DNSUnanswered as exc:
                dns_down = str(exc)
        if dns_down is not None:
            click.echo(f"  not checked: DNS did not answer ({dns_down})")
            continue
        click.echo(f"  {_verdict(what, expected, published)}")


class _DNSUnanswered(Exception):
    """No DNS answer at all (no resolver, timeout): nothing can be said about the records."""


def _resolver(nameserver: str | None, timeout: float):
    """A TXT lookup: the strings of each record joined; [] for no record; _DNSUnanswered if DNS is down."""
    import dns.exception
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver(configure=nameserver is None)
    except dns.exception.DNSException as exc:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = []
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        reason = ""
    if nameserver:
        host, _, port = nameserver.rpartition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
        resolver.nameservers = [host]
        resolver.port = int(port or 53)
    resolver.lifetime = timeout

    def lookup(name: str) -> list[str]:
        if not resolver.nameservers:
            raise _DNSUnanswered(reason or "no resolver configured")
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise _DNSUnanswered(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return lookup


def _tags(value: str) -> dict[str, str]:
    return {
        k.strip().lower(): v.strip() for k, _, v in (t.partition("=") for t in value.split(";")) if k.strip()
    }


def _verdict(what: str, expected: str, published: list[str]) -> str:
    """One line: is the record there, and does it say what it should."""
    if what == "SPF":
        spf = [r for r in published if r.lower().startswith("v=spf1")]
        if not spf:
            return "not published"
        if len(spf) > 1:
            return f"{len(spf)} SPF records published: receivers treat that as an error (permerror); keep one"
        return f"published: {spf[0]}"
    if what == "DMARC":
        dmarc = [r for r in published if r.upper().startswith("V=DMARC1")]
        return f"published: {dmarc[0]}" if dmarc else "not published"
    want = _tags(expected).get("p", "")
    found = [_tags(r).get("p", "").replace(" ", "") for r in published if "p=" in r]
    if not found:
        return "not published"
    return (
        "published, matches the key"
        if want in found
        else "published, but p= is NOT this key (signatures fail)"
    )
