"""``bounces serve``: the bounce domain's MX, an SMTP receiver (aiosmtpd) feeding the one parser.

It accepts RCPT only for the bounce address (``bounces@domain``, where feedback loops send their
ARF reports) and its VERP variants (``bounces+TAG@domain``); anything else is a 550. Every
message gets a 250 once it was read, even when it names nothing of ours (the sender has nothing
to retry), a 550 when it is malformed, and a 451 when the database is down, so the MTA retries.
"""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.controller import Controller

from newsletter.core.runtime import Runtime
from newsletter.feedback.parse import MAX_SIZE
from newsletter.feedback.receive import take_report

log = logging.getLogger(__name__)


class BounceHandler:
    """aiosmtpd handler: RCPT only for the bounce address, DATA goes through ``take_report``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        local, _, domain = runtime.settings.bounce_address.lower().rpartition("@")
        self.local, self.domain = local, domain

    def accepts(self, address: str) -> bool:
        local, _, domain = address.strip("<>").lower().rpartition("@")
        base, plus, tag = local.partition("+")
        return domain == self.domain and base == self.local and (not plus or bool(tag))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd
        if not self.accepts(address):
            return f"550 5.1.1 <{address}>: not a bounce address of this server"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(None, self._take, raw, list(envelope.rcpt_tos))
        except Exception as exc:  # noqa: BLE001 - the database is down (or broken): the MTA retries
            log.debug("recording a report failed", exc_info=True)
            log.error("report from <%s> not recorded, answered 451: %s", envelope.mail_from, _first_line(exc))
            return "451 4.3.0 cannot record the report now; try again later"
        log.info(
            "report from <%s> to %s: %s: %s",
            envelope.mail_from,
            ",".join(envelope.rcpt_tos),
            outcome.status,
            outcome.detail,
        )
        if outcome.status == "refused":
            return f"550 5.6.0 refused: {outcome.detail}"[:500]
        return "250 2.0.0 OK"

    def _take(self, raw: bytes, rcpts: list[str]):
        runtime = self.runtime
        return take_report(runtime.sessions, runtime.settings, raw, source="smtp", envelope_to=rcpts)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def make_server(runtime: Runtime, host: str, port: int) -> Controller:
    """A started-on-demand SMTP receiver (``.start()``/``.stop()``) on HOST:PORT, SIZE-limited."""
    return Controller(
        BounceHandler(runtime),
        hostname=host,
        port=port,
        data_size_limit=MAX_SIZE,
        ident="newsletter bounces",
    )
