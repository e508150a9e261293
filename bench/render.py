"""Campaign rendering figures: render once, then personalise per recipient.

    python bench/render.py [--messages 5000] [--campaign campaigns/spring-sale]

Prints, in one run and on the same email:
- the once-per-campaign render (Jinja sandbox, MJML, premailer, text), cold and warm;
- per-recipient throughput of ``personalise`` (skeleton encoded once, values spliced,
  quoted-printable by binascii), messages/s and µs/message;
- the reference: a full stdlib ``EmailMessage`` per recipient through ``build_message``
  (the engine's transactional builder) and ``as_bytes()``, messages/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.campaigns.messages import campaign_headers  # noqa: E402
from newsletter.campaigns.rendering import render_campaign  # noqa: E402
from newsletter.campaigns.site import SiteContext  # noqa: E402
from newsletter.campaigns.validation import fill, validate_campaign  # noqa: E402
from newsletter.mail.message import build_message  # noqa: E402
from newsletter.mail.skeleton import build_skeleton, personalise  # noqa: E402

SITE = SiteContext(
    store_name="Our store",
    postal_address="1 Example Street, Example City",
    base_url="https://news.shop.example",
    sender="Our store <news@shop.example>",
    list_id="shop.example",
    topics={"newsletter": "Newsletter", "early-access": "Early access", "product-news": "Product news"},
)
NOW = datetime(2026, 11, 23, 12, 0)


def values_for(i: int) -> dict[str, str]:
    token = f"{i:08d}.aGVsbG8gd29ybGQgdGhpcyBpcyBhIHRva2Vu.Zm9vYmFyYmF6"
    return {
        "first_name": ["Ann", "Zoë", "", "Bartholomew"][i % 4],
        "email": f"person{i}@example.com",
        "unsubscribe_url": f"{SITE.base_url}/unsubscribe/{token}",
        "preferences_url": f"{SITE.base_url}/preferences/{token}",
        "early_access_url": f"{SITE.base_url}/early-access/{token}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--campaign", default=str(ROOT / "campaigns" / "spring-sale"))
    args = parser.parse_args()

    report = validate_campaign(Path(args.campaign), SITE, NOW)
    if not report.ok:
        sys.exit("\n".join(str(p) for p in report.errors))
    source = report.campaign
    renders = []
    for _ in range(5):
        started = time.perf_counter()
        emails = render_campaign(source, SITE)
        renders.append(time.perf_counter() - started)
    wave, email = next(iter(emails.items()))
    headers = campaign_headers(source, SITE, wave)
    print(f"campaign {source.slug}: {len(source.waves)} waves, {len(emails)} distinct email(s)")
    print(f"  HTML {len(email.html.encode()) / 1024:.1f} KB, text {len(email.text.encode()) / 1024:.1f} KB")
    print(
        f"render once (Jinja+MJML+premailer+text, all waves): first {renders[0] * 1000:.1f} ms, "
        f"then median {statistics.median(renders[1:]) * 1000:.1f} ms"
    )

    started = time.perf_counter()
    skeleton = build_skeleton(
        sender=SITE.sender,
        subject=email.subject,
        text=email.text,
        html=email.html,
        slots=email.slots,
        headers=headers,
    )
    skeleton_ms = (time.perf_counter() - started) * 1000
    print(f"build_skeleton (once per batch): {skeleton_ms:.2f} ms")

    n = args.messages
    size = 0
    started = time.perf_counter()
    for i in range(n):
        data = personalise(
            skeleton, f"person{i}@example.com", values_for(i), message_id=f"<{i}@shop.example>"
        )
        size += len(data)
    fast = time.perf_counter() - started
    print(
        f"personalise: {n / fast:,.0f} messages/s ({fast / n * 1e6:.0f} µs each, "
        f"{size / n / 1024:.1f} KB average)"
    )

    reference_n = max(200, n // 10)
    started = time.perf_counter()
    for i in range(reference_n):
        values = values_for(i)
        message = build_message(
            sender=SITE.sender,
            to=f"person{i}@example.com",
            subject=fill(email.subject, values),
            text=fill(email.text, values),
            html=fill(email.html, values),  # (no escaping: the reference only measures MIME cost)
            headers={k: fill(v, values) for k, v in headers.items()},
        )
        message.as_bytes()
    slow = time.perf_counter() - started
    print(
        f"reference, stdlib EmailMessage per recipient: {reference_n / slow:,.0f} messages/s "
        f"({slow / reference_n * 1e6:.0f} µs each)"
    )
    print(f"personalise is {(n / fast) / (reference_n / slow):.1f}x the reference")


if __name__ == "__main__":
    main()
