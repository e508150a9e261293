"""The store as its pages and emails show it: the From header, the logo, the colours.

Text on a brand colour is black or white, whichever contrasts more (WCAG relative luminance), so a
store's light or dark colour stays readable without a second setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr

from newsletter.core.config import Settings

INK = "#1f2328"
PAPER = "#ffffff"


def sender(configured: str, store_name: str) -> str:
    """The From header: ``configured`` with its own display name, else STORE_NAME's (quoted as needed;
    the message's policy encodes a non-ASCII name as RFC 2047 words)."""
    name, address = parseaddr(configured)
    local, _, domain = address.partition("@")
    return str(Address(display_name=name or store_name, username=local, domain=domain))


def from_header(settings: Settings) -> str:
    return sender(settings.from_, settings.store_name)


def _luminance(colour: str) -> float:
    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def text_on(background: str) -> str:
    return INK if contrast(INK, background) >= contrast(PAPER, background) else PAPER


@dataclass(frozen=True)
class Brand:
    """What the base layouts of pages and emails read as ``brand.*`` (docs/theming.md)."""

    name: str
    logo_url: str
    logo_width: int
    colour: str  #: buttons, focus rings
    on_colour: str  #: text on a button
    link: str  #: the brand colour when it reads on white (4.5:1), else the ink colour
    header: str  #: the header's background
    on_header: str  #: the store's name on it


def brand_of(settings: Settings) -> Brand:
    colour = settings.brand_colour
    return Brand(
        name=settings.store_name,
        logo_url=settings.logo_url,
        logo_width=settings.logo_width,
        colour=colour,
        on_colour=text_on(colour),
        link=colour if contrast(colour, PAPER) >= 4.5 else INK,
        header=settings.header_colour,
        on_header=text_on(settings.header_colour),
    )
