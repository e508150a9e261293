"""Previews and test sends: the same skeleton and splice as real sending, with sample values."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from email.utils import make_msgid, parseaddr
from pathlib import Path

from newsletter.campaigns.messages import campaign_headers
from newsletter.campaigns.rendering import RenderedEmail
from newsletter.campaigns.site import SiteContext
from newsletter.campaigns.validation import ValidationReport
from newsletter.mail.message import domain_of, preview_files
from newsletter.mail.skeleton import build_skeleton, personalise

#: screenshot widths: the desktop column MJML lays out, and a common phone
WIDTHS = (600, 375)
TEST_PREFIX = "[TEST] "


class ChromiumMissing(RuntimeError):
    """No chromium binary: previews keep their HTML, text and .eml but get no screenshots."""


@dataclass(frozen=True)
class PreviewFile:
    wave: str | None
    path: Path


def campaign_message(
    report: ValidationReport,
    site: SiteContext,
    wave: str | None,
    email: RenderedEmail,
    to: str,
    values: dict[str, str],
    subject_prefix: str = "",
) -> bytes:
    """One complete message exactly as a worker would build it (skeleton, then personalise)."""
    source = report.campaign
    assert source is not None
    sender = source.sender or site.sender
    skeleton = build_skeleton(
        sender=sender,
        subject=subject_prefix + email.subject,
        text=email.text,
        html=email.html,
        slots=email.slots,
        headers=campaign_headers(source, site, wave),
    )
    return personalise(skeleton, to, values, message_id=make_msgid(domain=domain_of(sender)))


def envelope_from(report: ValidationReport, site: SiteContext) -> str:
    assert report.campaign is not None
    return parseaddr(report.campaign.sender or site.sender)[1]


def write_preview(
    report: ValidationReport,
    site: SiteContext,
    to: str,
    values: dict[str, str],
    out: Path,
    *,
    screenshots: bool = True,
) -> list[PreviewFile]:
    """Write NAME.html, .txt, .eml (and -600.png, -375.png) per distinct email into ``out``."""
    assert report.campaign is not None
    out.mkdir(parents=True, exist_ok=True)
    written: list[PreviewFile] = []
    pages: list[tuple[str | None, Path]] = []
    for wave, email in report.emails.items():
        stem = report.campaign.slug + (f"-{wave}" if wave else "")
        data = campaign_message(report, site, wave, email, to, values)
        for suffix, content in preview_files(data).items():
            path = out / f"{stem}{suffix}"
            path.write_bytes(content)
            written.append(PreviewFile(wave, path))
        pages.append((wave, out / f"{stem}.html"))
    if screenshots:
        for wave, page in pages:
            for width in WIDTHS:
                png = page.with_name(f"{page.stem}-{width}.png")
                screenshot(page, png, width)
                written.append(PreviewFile(wave, png))
    return written


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        raise ChromiumMissing("chromium is not installed (apt-get install chromium); no screenshots taken")
    return found


def screenshot(page: Path, png: Path, width: int, height: int = 1800, timeout: float = 90) -> None:
    """A PNG of ``page`` at ``width`` pixels, by headless Chromium without network chatter."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="nl-chromium-") as profile:
        result = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={png.resolve()}",
                f"--window-size={width},{height}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0 or not png.exists():
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"chromium failed to take a screenshot (exit {result.returncode}): {tail[0]}")
