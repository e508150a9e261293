"""Previews and test sends: the same skeleton and splice as real sending, with sample values."""

from __future__ import annotations

import html
import re
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
    #: the variant's language (the default email's is campaign.toml's ``language``)
    language: str = ""


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
    languages: list[str] | None = None,
) -> list[PreviewFile]:
    """Write NAME.html, .txt, .eml (and -600.png, -375.png) per distinct email into ``out``, for every
    variant (``languages``: those only); a variant's NAME ends in ``.<lang>`` (``spring-sale-vip.de``)."""
    source = report.campaign
    assert source is not None
    out.mkdir(parents=True, exist_ok=True)
    written: list[PreviewFile] = []
    pages: list[tuple[str | None, str, Path]] = []
    for language in languages or report.languages:
        for wave, email in report.emails_in(language).items():
            stem = (
                source.slug
                + (f"-{wave}" if wave else "")
                + ("" if language == source.language else f".{language}")
            )
            data = campaign_message(report, site, wave, email, to, values)
            for suffix, content in preview_files(data).items():
                path = out / f"{stem}{suffix}"
                path.write_bytes(content)
                written.append(PreviewFile(wave, path, language))
            pages.append((wave, language, out / f"{stem}.html"))
    if screenshots:
        for wave, language, page in pages:
            for width in WIDTHS:
                png = page.with_name(f"{page.stem}-{width}.png")
                screenshot(page, png, width)
                written.append(PreviewFile(wave, png, language))
    return written


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        raise ChromiumMissing("chromium is not installed (apt-get install chromium); no screenshots taken")
    return found


#: Chromium draws nothing past about this height; longer emails are cut here
MAX_HEIGHT = 16_000
#: the page in an iframe exactly ``width`` wide: headless Chromium's window is never narrower than
#: 500 px, so a 375 px window alone would lay the email out at 500 px and crop it (no phone layout)
_FRAME = (
    '<!doctype html><html><body style="margin:0">'
    '<iframe id="f" srcdoc="{srcdoc}" style="display:block;border:0;width:{width}px;height:{height}px"'
    " onload=\"document.documentElement.setAttribute('data-nl-height',"
    ' String(this.contentDocument.documentElement.scrollHeight))"></iframe></body></html>'
)


def _framed(page: Path, folder: Path, width: int, height: int) -> Path:
    """A page showing ``page`` in an iframe of ``width`` x ``height`` pixels."""
    srcdoc = html.escape(page.read_text("utf-8"), quote=True)
    framed = folder / f"framed-{width}.html"
    framed.write_text(_FRAME.format(srcdoc=srcdoc, width=width, height=height), "utf-8")
    return framed


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Headless Chromium once, in a throwaway profile, without network chatter."""
    with tempfile.TemporaryDirectory(prefix="nl-chromium-") as profile:
        return subprocess.run(
            [
                chromium_binary(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def page_height(page: Path, width: int, timeout: float = 90) -> int:
    """The height of ``page`` laid out ``width`` pixels wide, measured by Chromium itself.

    The command line has no full-page screenshot, so the page is loaded once in a short frame
    and the frame's script writes the page's scroll height into the DOM that --dump-dom prints.
    """
    with tempfile.TemporaryDirectory(prefix="nl-measure-") as folder:
        framed = _framed(page, Path(folder), width, 100)
        result = _chromium([f"--window-size={width},100", "--dump-dom", framed.as_uri()], timeout)
    found = re.search(rb'data-nl-height="(\d+)"', result.stdout)
    if result.returncode != 0 or found is None:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"chromium failed to measure the page (exit {result.returncode}): {tail[0]}")
    return max(1, min(int(found.group(1)), MAX_HEIGHT))


def screenshot(page: Path, png: Path, width: int, height: int | None = None, timeout: float = 90) -> None:
    """A PNG of the whole of ``page`` at ``width`` pixels (``height``: its measured height by default)."""
    height = height or page_height(page, width, timeout)
    with tempfile.TemporaryDirectory(prefix="nl-frame-") as folder:
        framed = _framed(page, Path(folder), width, height)
        result = _chromium(
            [f"--screenshot={png.resolve()}", f"--window-size={width},{height}", framed.as_uri()], timeout
        )
    if result.returncode != 0 or not png.exists():
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"chromium failed to take a screenshot (exit {result.returncode}): {tail[0]}")
