"""The plain-text alternative, generated from the final HTML (links kept, hidden parts dropped)."""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser

_BLOCK = {"p", "div", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "hr", "section"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "source", "wbr"}
_SKIP = {"head", "style", "script", "title", "noscript"}


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0  #: depth inside an element whose text is not shown
        self.link: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if self.skip:
            if tag not in _VOID:
                self.skip += 1
            return
        hidden = re.search(r"display\s*:\s*none", attr.get("style", ""), re.I)
        if (tag in _SKIP or hidden) and tag not in _VOID:
            self.skip = 1
            return
        if tag == "br":
            self.out.append("\n")
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and attr.get("href", "").strip():
            self.link = (attr["href"].strip(), [])
        elif tag == "img" and self.link is not None and attr.get("alt"):
            self.link[1].append(attr["alt"])

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            self.skip -= 1
            return
        if tag == "a" and self.link is not None:
            href, words = self.link
            self.link = None
            label = " ".join("".join(words).split())
            self.out.append(href if not label or label == href else f"{label} ({href})")
        elif tag in _BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.link is not None:
            self.link[1].append(data)
        else:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str, width: int = 76) -> str:
    """Readable text: paragraphs wrapped at ``width``, links as "label (url)", never split."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    wrapped = []
    for paragraph in re.split(r"\n\s*\n", "".join(parser.out)):
        lines = [" ".join(line.split()) for line in paragraph.split("\n")]
        lines = [line for line in lines if line]
        if lines:
            wrapped.append(
                "\n".join(
                    textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False)
                    for line in lines
                )
            )
    return "\n\n".join(wrapped) + "\n"
