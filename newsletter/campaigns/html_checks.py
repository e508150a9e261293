"""Checks on a campaign's final HTML (after MJML and premailer): a visible footer, absolute URLs.

CSS can hide the unsubscribe link as surely as deleting it. So the footer is checked where a
reader meets it: on the inlined HTML, element by element up to the root, with the inline styles
premailer wrote. Then, for every group of rules premailer left in ``<style>`` (the sheet itself,
each ``@media`` block, each ``<style media>``), that group is applied on top as if its condition
held, so a rule that premailer could not inline (a media query, ``a:link``) cannot hide it either.
"""

from __future__ import annotations

import colorsys
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import cssutils
from cssselect import HTMLTranslator, SelectorError
from cssselect import parse as parse_selector
from lxml import html as lxml_html

from newsletter.mail.skeleton import SLOT, slot_token

#: below these a reader sees nothing
MIN_FONT_PX = 6.0
MIN_OPACITY = 0.1
#: WCAG contrast ratio of text on its background (1.0: the same colour; body text wants 4.5)
MIN_CONTRAST = 1.5
DEFAULT_FONT_PX = 16.0
WHITE, BLACK, LINK_BLUE = (255, 255, 255), (0, 0, 0), (0, 0, 238)
_KEYWORD_PX = {
    "xx-small": 9, "x-small": 10, "small": 13, "medium": 16, "large": 18, "x-large": 24, "xx-large": 32,
}  # fmt: skip
_LENGTH = re.compile(r"^([-+]?\d*\.?\d+)(px|pt|pc|em|rem|ex|ch|vw|vh|%|cm|mm|in)?$")
#: pseudo-classes that hold for a link as it is shown (treated as matching); others need a gesture
_ALWAYS = re.compile(r":(?:link|visited|any-link)\b")
_URL_ATTRIBUTES = ("href", "src", "background", "action", "poster")
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]*)""", re.IGNORECASE)

_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_STATEMENT = re.compile(r"@(?:import|charset|namespace)\b[^;{]*;", re.IGNORECASE)
#: CSS's colour names (cssutils keeps the table)
_NAMED = {name: (r, g, b, float(a)) for name, (r, g, b, a) in cssutils.css.ColorValue.COLORS.items()}
#: ``name: value`` pairs split on semicolons outside quotes and parentheses (``url(a;b)``)
_DECLARATION = re.compile(r"""(?:[^;"'(]|"[^"]*"|'[^']*'|\([^)]*\))+""")
_IMPORTANT = re.compile(r"\s*!\s*important\s*$")

Declarations = dict[str, tuple[str, bool]]  #: property -> (value, important), shorthands expanded
Rule = tuple[list[str], Declarations]  #: selectors and their declarations


@dataclass(frozen=True)
class Hidden:
    """A footer part no reader would see: what, why, and patterns to find the cause in email.mjml."""

    what: str
    reason: str
    clues: tuple[str, ...] = ()


def parse_html(html: str) -> lxml_html.HtmlElement:
    return lxml_html.document_fromstring(html)


def declarations(css: str) -> Declarations:
    """A declaration block, later declarations winning unless an earlier one is !important.

    A small splitter rather than cssutils, which takes milliseconds per ``style`` attribute.
    """
    result: Declarations = {}
    for declaration in _DECLARATION.findall(css or ""):
        prop, _, raw = declaration.partition(":")
        raw, important = _IMPORTANT.subn("", raw.strip().lower())
        if not prop.strip() or not raw:
            continue
        for name, value in _expand(prop.strip().lower(), " ".join(raw.split())):
            if name in result and result[name][1] and not important:
                continue
            result[name] = (value, bool(important))
    return result


def _expand(name: str, value: str) -> list[tuple[str, str]]:
    """The longhands this check reads out of ``background`` and ``font``."""
    if name == "background":
        parts = re.findall(r"(?:[a-z]+\([^)]*\)|[^\s(]+)", value)
        colour = next((p for p in parts if _colour(p) is not None), "transparent")
        image = "url" if "url(" in value or "gradient(" in value else "none"
        return [(name, value), ("background-color", colour), ("background-image", image)]
    if name == "font":
        size = next((t.split("/")[0] for t in value.split() if _px(t.split("/")[0], 16) is not None), None)
        return [(name, value)] + ([("font-size", size)] if size else [])
    return [(name, value)]


def _colour(value: str) -> tuple[int, int, int, float] | None:
    """``#abc``, ``#aabbcc(dd)``, ``rgb()``/``rgba()``, ``hsl()``/``hsla()`` or a colour name as RGBA."""
    value = value.strip().lower()
    if value in _NAMED:
        return _NAMED[value]
    if re.fullmatch(r"#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", value):
        digits = value[1:]
        if len(digits) <= 4:
            digits = "".join(d * 2 for d in digits)
        alpha = int(digits[6:8], 16) / 255 if len(digits) == 8 else 1.0
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), alpha
    match = re.fullmatch(r"(rgba?|hsla?)\(([^)]*)\)", value)
    if not match:
        return None
    parts = [p for p in re.split(r"[\s,/]+", match.group(2)) if p]
    if len(parts) not in (3, 4):
        return None
    try:
        numbers = [float(p.rstrip("%deg")) for p in parts]
    except ValueError:
        return None
    alpha = 1.0 if len(parts) == 3 else numbers[3] / (100 if parts[3].endswith("%") else 1)
    if match.group(1).startswith("rgb"):
        rgb = [n * 2.55 if p.endswith("%") else n for n, p in zip(numbers[:3], parts, strict=False)]
    else:
        rgb = [c * 255 for c in colorsys.hls_to_rgb(numbers[0] / 360 % 1, numbers[2] / 100, numbers[1] / 100)]
    r, g, b = (max(0, min(255, round(c))) for c in rgb)
    return r, g, b, max(0.0, min(1.0, alpha))


def _px(value: str, parent: float) -> float | None:
    """A font size in px (None: not a length this check understands)."""
    if value in _KEYWORD_PX:
        return float(_KEYWORD_PX[value])
    if value in ("smaller", "larger"):
        return parent * (0.83 if value == "smaller" else 1.2)
    match = _LENGTH.match(value.replace(" ", ""))
    if not match or (match.group(2) is None and float(match.group(1)) != 0):
        return None
    number, unit = float(match.group(1)), match.group(2) or "px"
    factor = {"px": 1, "pt": 4 / 3, "pc": 16, "em": parent, "rem": DEFAULT_FONT_PX, "%": parent / 100}
    return number * factor.get(unit, 1 if number == 0 else parent)


def _zero(value: str | None) -> bool:
    return value is not None and _px(value, DEFAULT_FONT_PX) == 0


def _luminance(rgb: tuple[int, ...]) -> float:
    def channel(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """WCAG contrast ratio, 1 (same) to 21 (black on white)."""
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def describe(el) -> str:
    """``<div class="footer">``: enough to recognise an element."""
    attrs = "".join(f' {a}="{el.get(a)}"' for a in ("id", "class") if el.get(a))
    return f"<{el.tag}{attrs}>"


def _declaration_clue(name: str, value: str) -> str:
    return rf"{re.escape(name)}\s*[:=]\s*[\"']?\s*{re.escape(value)}"


@functools.lru_cache(maxsize=1024)
def _compile(selector: str) -> tuple[str, tuple[int, int, int]] | None:
    """XPath and specificity of one selector; None if it cannot match the footer as shown."""
    selector = _ALWAYS.sub("", selector).strip()
    try:
        parsed = parse_selector(selector)
        if not parsed or parsed[0].pseudo_element:
            return None  # ::before and friends style something that is not the footer
        return HTMLTranslator().css_to_xpath(selector), parsed[0].specificity()
    except (SelectorError, ValueError):
        return None  # :hover and the like need a gesture; unparseable selectors match nothing


class Cascade:
    """Inline styles plus one group of ``<style>`` rules, with CSS's order of precedence."""

    def __init__(self, doc, rules: list[Rule]) -> None:
        self._extra: dict = {}
        self._cache: dict = {}
        for order, (selectors, block) in enumerate(rules):
            for selector in selectors:
                compiled = _compile(selector)
                if compiled is None:
                    continue
                xpath, specificity = compiled
                for el in doc.xpath(xpath):
                    for name, (value, important) in block.items():
                        self._extra.setdefault(el, []).append(((important, specificity, order), name, value))

    def style(self, el) -> dict[str, str]:
        """The declared (not inherited) values of ``el``."""
        if el in self._cache:
            return self._cache[el]
        inline = declarations(el.get("style") or "")
        result = {name: value for name, (value, _) in inline.items()}
        for (important, _, _), name, value in sorted(self._extra.get(el, []), key=lambda item: item[0]):
            if name in inline and (inline[name][1] or not important):
                continue  # inline wins over the sheet unless the sheet says !important
            result[name] = value
        self._cache[el] = result
        return result


def _chain(el) -> list:
    chain = []
    while el is not None:
        if isinstance(el.tag, str):
            chain.append(el)
        el = el.getparent()
    return chain


def _box_hidden(cascade: Cascade, el) -> tuple[str, tuple[str, ...]] | None:
    """Why ``el`` and everything in it is hidden, whatever its descendants say."""
    style = cascade.style(el)
    if el.get("hidden") is not None:
        return f"the hidden attribute on {describe(el)}", (r"\bhidden\b",)
    if style.get("display") == "none":
        return f"display:none on {describe(el)}", (_declaration_clue("display", "none"),)
    if style.get("mso-hide") == "all":
        return f"mso-hide:all on {describe(el)}", (_declaration_clue("mso-hide", "all"),)
    opacity = style.get("opacity")
    if opacity is not None:
        try:
            number = float(opacity[:-1]) / 100 if opacity.endswith("%") else float(opacity)
        except ValueError:
            number = 1.0
        if number < MIN_OPACITY:
            return f"opacity:{opacity} on {describe(el)}", (_declaration_clue("opacity", opacity),)
    overflow = {style.get(p) for p in ("overflow", "overflow-x", "overflow-y")}
    if overflow & {"hidden", "clip"}:
        for prop in ("height", "max-height", "width", "max-width"):
            if _zero(style.get(prop)):
                value = style[prop]
                return (
                    f"{prop}:{value} with overflow:hidden on {describe(el)}",
                    (_declaration_clue(prop, value), _declaration_clue("overflow", "hidden")),
                )
    return None


def _text_hidden(cascade: Cascade, el) -> tuple[str, tuple[str, ...]] | None:
    """Why text directly inside ``el`` cannot be seen: a hidden box, visibility, size or colour."""
    chain = _chain(el)
    for node in chain:
        found = _box_hidden(cascade, node)
        if found:
            return found
    for node in chain:  # visibility is inherited, and a descendant may turn it back on
        visibility = cascade.style(node).get("visibility")
        if visibility in ("hidden", "collapse"):
            clue = _declaration_clue("visibility", visibility)
            return f"visibility:{visibility} on {describe(node)}", (clue,)
        if visibility == "visible":
            break
    size, size_from = DEFAULT_FONT_PX, None
    for node in reversed(chain):
        declared = cascade.style(node).get("font-size")
        px = _px(declared, size) if declared else None
        if px is not None:
            size, size_from = px, (node, declared)
    if size < MIN_FONT_PX and size_from:
        node, declared = size_from
        return f"font-size:{declared} on {describe(node)}", (_declaration_clue("font-size", declared),)
    return _colour_hidden(cascade, chain)


def _colour_hidden(cascade: Cascade, chain: list) -> tuple[str, tuple[str, ...]] | None:
    text, text_raw = None, None
    for node in chain:
        declared = cascade.style(node).get("color") or (node.get("color") if node.tag == "font" else None)
        if declared and _colour(declared):
            text, text_raw = _colour(declared), declared
            break
        if node.tag == "a":  # a link without a colour of its own is the client's link blue
            text = (*LINK_BLUE, 1.0)
            break
    text = text or (*BLACK, 1.0)
    background, background_raw = (*WHITE, 1.0), None
    for node in chain:
        style = cascade.style(node)
        if style.get("background-image", "none") != "none":
            return None  # an image behind the text: colours alone cannot tell
        declared = style.get("background-color") or (None if "background" in style else node.get("bgcolor"))
        found = _colour(declared) if declared else None
        if found and found[3] > 0:
            background, background_raw = found, declared
            break
    clues = tuple(clue for raw in (background_raw, text_raw) if raw for clue in _colour_clues(raw))
    if text[3] < MIN_OPACITY:
        return f"a transparent text colour ({text_raw})", clues
    if contrast(text, background) < MIN_CONTRAST:
        shown = f"{_hex(text) if text_raw else 'the default colour'} on {_hex(background)}"
        return f"its text colour equals its background ({shown})", clues
    return None


def _hex(colour: tuple) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour[:3])


def _colour_clues(raw: str) -> list[str]:
    """Ways email.mjml may have written this colour: as it is, #aabbcc, #abc."""
    six = _hex(_colour(raw) or (0, 0, 0))
    short = f"#{six[1]}{six[3]}{six[5]}" if six[1::2] == six[2::2] else None
    return [re.escape(raw)] + [rf"{re.escape(form)}\b" for form in (six, short) if form]


def _texts(el) -> Iterator:
    """Elements that directly hold non-blank text inside ``el`` (``el`` itself included)."""
    if (el.text or "").strip():
        yield el
    for child in el.iterdescendants():
        if not isinstance(child.tag, str):
            if (child.tail or "").strip():
                yield child.getparent()
            continue
        if (child.text or "").strip():
            yield child
        if (child.tail or "").strip():
            yield child.getparent()


def _link_hidden(cascade: Cascade, link) -> tuple[str, tuple[str, ...]] | None:
    reasons = []
    for holder in _texts(link):
        found = _text_hidden(cascade, holder)
        if found is None:
            return None
        reasons.append(found)
    for image in link.iter("img"):
        found = next(filter(None, (_box_hidden(cascade, n) for n in _chain(image))), None)
        if found is None:
            return None
        reasons.append(found)
    return reasons[0] if reasons else ("it has no text", ())


def _address_holders(body, address: str) -> list:
    wanted = " ".join(address.split())
    holders = []
    for el in body.iter():
        if isinstance(el.tag, str) and wanted in " ".join((el.text or "").split()):
            holders.append(el)
        if wanted in " ".join((el.tail or "").split()) and el.getparent() is not None:
            holders.append(el.getparent())
    return holders


def _closing(css: str, start: int) -> int:
    """Index of the brace that closes the one at ``start`` (the end of the text if none does)."""
    depth = 0
    for index in range(start, len(css)):
        depth += {"{": 1, "}": -1}.get(css[index], 0)
        if depth == 0:
            return index
    return len(css)


def _sheet(css: str) -> tuple[list[Rule], list[tuple[str, list[Rule]]]]:
    """A style sheet's plain rules and its conditional blocks (``@media``, ``@supports``).

    A few lines of brace matching instead of cssutils, which takes ~15 ms per block; other
    at-rules (``@font-face``, ``@keyframes``, ``@import``) cannot hide an element and are skipped.
    """
    css = _STATEMENT.sub("", _COMMENT.sub("", css).replace("<!--", "").replace("-->", ""))
    plain: list[Rule] = []
    conditional: list[tuple[str, list[Rule]]] = []
    position = 0
    while (brace := css.find("{", position)) >= 0:
        prelude, end = " ".join(css[position:brace].split()), _closing(css, brace)
        body, position = css[brace + 1 : end], end + 1
        if prelude.lower().startswith(("@media", "@supports")):
            rules, nested = _sheet(body)
            conditional += [(f"{prelude} {label}", inner) for label, inner in nested]
            conditional.append((prelude, rules))
        elif prelude and not prelude.startswith("@"):
            plain.append((prelude.split(","), declarations(body)))
    return plain, conditional


def _groups(doc) -> list[tuple[str, list[Rule]]]:
    """The style rules clients may apply: the plain sheet, then each conditional block on top of it."""
    plain: list[Rule] = []
    conditional: list[tuple[str, list[Rule]]] = []
    for style in doc.iter("style"):
        rules, blocks = _sheet(style.text or "")
        media = " ".join((style.get("media") or "").split())
        if media and media.lower() not in ("all", "screen"):
            conditional.append((f'<style media="{media}">', rules))
        else:
            plain += rules
        conditional += blocks
    return [("", plain)] + [(f" (in {label})", plain + rules) for label, rules in conditional]


def hidden_footer(doc, postal_address: str) -> list[Hidden]:
    """The footer parts (unsubscribe link, preferences link, postal address) no reader would see.

    Each part must be visible at least once. Parts missing altogether are not reported here.
    """
    parts = []
    for what, name in (("unsubscribe link", "unsubscribe_url"), ("preferences link", "preferences_url")):
        links = [a for a in doc.body.iter("a") if (a.get("href") or "").strip() == slot_token(name, "url")]
        parts.append((what, links, _link_hidden))
    parts.append(("postal address", _address_holders(doc.body, postal_address), _text_hidden))
    found: dict[str, Hidden] = {}
    for label, rules in _groups(doc):
        cascade = Cascade(doc, rules)
        for what, elements, check in parts:
            if what in found or not elements:
                continue
            reasons = [check(cascade, el) for el in elements]
            if all(reasons):
                reason, clues = reasons[0]
                found[what] = Hidden(what, f"{reason}{label}", clues)
    return [found[what] for what, _, _ in parts if what in found]


def is_absolute(url: str) -> bool:
    """An address every client can follow: http(s) with a host, mailto:, tel:, #anchor, a personal link."""
    url = url.strip()
    if len(url) > 1 and url.startswith("#"):
        return True
    slot = SLOT.match(url)
    if slot and slot.group(1).endswith("_url"):
        return True
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return bool(parts.netloc) and url.lower().startswith(f"{scheme}://")
    return scheme in ("mailto", "tel")


def relative_urls(doc) -> dict[str, str]:
    """Every URL in the HTML that a client cannot resolve, once, with where it first appears."""
    found: dict[str, str] = {}
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        for attr in _URL_ATTRIBUTES:
            value = el.get(attr)
            if value is not None and not is_absolute(value):
                found.setdefault(value, attr)
        css = el.text if el.tag == "style" else el.get("style")
        for url in _CSS_URL.findall(css or ""):
            if not is_absolute(url):
                found.setdefault(url, "a CSS url()")
    return found
