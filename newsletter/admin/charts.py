"""Charts for the dashboard: pygal draws them on the server as inline SVG, so a page needs no
JavaScript and the strict CSP stays (pygal's own stylesheet inside the SVG gets the response's
nonce; its tooltip script is left out). Every chart has a table of the same numbers beside it on
the page, for screen readers and for anyone who wants the figures."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import pygal
from markupsafe import Markup
from pygal.style import Style

from newsletter.web.security import csp_nonce

#: the dashboard's palette (admin.css uses the same ink and accent colours)
STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#9aa5b1",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=13,
    title_font_size=15,
    colors=("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2"),
)


def _options(title: str, labels: Sequence[str], y_title: str | None) -> dict:
    # at most ~12 x labels shown, however many points: a 90-day axis stays readable on a phone
    return {
        "title": title,
        "style": STYLE,
        "js": [],
        "disable_xml_declaration": True,
        "width": 800,
        "height": 320,
        # (pygal's legend_at_bottom_columns leaves no room for the legend: it is drawn cut off)
        "legend_at_bottom": True,
        "show_minor_x_labels": False,
        "x_labels_major_every": max(1, len(labels) // 12),
        "truncate_label": -1,
        "y_title": y_title,
        "print_values": False,
        "dots_size": 2,
        "margin": 8,
        "margin_right": 40,  # room for the last x label, centred on the edge
        "no_data_text": "Nothing yet",
    }


def _markup(svg: str, title: str) -> Markup:
    # pygal writes its config as an inline <script> even without its tooltips: the CSP would block it
    svg = re.sub(r"<script\b.*?</script>", "", svg, flags=re.S)
    # and a style attribute on the (empty, script-less) tooltip group, which the CSP refuses too
    svg = svg.replace(' style="opacity: 0" class="tooltip"', ' class="tooltip"')
    # the inline <style> of the SVG runs under the page's CSP nonce, like the page's own
    svg = svg.replace('<style type="text/css">', f'<style nonce="{csp_nonce()}">', 1)
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(title)}" ', 1)
    return Markup(f'<figure class="chart">{svg}</figure>')


Series = tuple[tuple[str, tuple[float | None, ...]], ...]


def _frozen(series: Mapping[str, Sequence[float | None]]) -> Series:
    return tuple((name, tuple(values)) for name, values in series.items())


# pygal takes 30-60 ms for one chart here: the same numbers are drawn once (a page shown again
# while nothing changed, the same chart on two pages); the nonce is added per response after it
@lru_cache(maxsize=64)
def _svg(kind: str, title: str, labels: tuple[str, ...], series: Series, y_title: str | None) -> str:
    options = _options(title, labels, y_title)
    if kind == "line":
        chart = pygal.Line(**options, fill=False, show_dots=len(labels) <= 48)
    else:
        chart = (pygal.StackedBar if kind == "stacked" else pygal.Bar)(**options)
    chart.x_labels = list(labels)
    for name, values in series:
        chart.add(name, list(values))
    counts = [v for _, values in series for v in values if v is not None]
    if counts and all(float(v).is_integer() for v in counts):
        chart.y_labels = _whole_steps(max(counts))  # counts: no 0.2 of a message on the axis
    return chart.render(is_unicode=True)


def _whole_steps(top: float) -> list[int]:
    """0 to at least TOP in at most ~6 round steps (1, 2 or 5 times a power of ten)."""
    step = 1
    while top / step > 6:
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step = int(step * factor)
            if top / step <= 6:
                break
    return list(range(0, int(top) + step, step)) if top > 0 else [0, 1]


def line(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    y_title: str | None = None,
) -> Markup:
    """One line per series over the same x labels (days, hours)."""
    return _markup(_svg("line", title, tuple(labels), _frozen(series), y_title), title)


def bars(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    y_title: str | None = None,
    stacked: bool = False,
) -> Markup:
    """Bars per label, one colour per series (stacked when the series add up to a whole)."""
    kind = "stacked" if stacked else "bars"
    return _markup(_svg(kind, title, tuple(labels), _frozen(series), y_title), title)
