"""The dashboard's charts as drawn: CSP-clean inline SVG, whole-number axes for counts, the legend inside."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from newsletter.admin import charts
from newsletter.admin.charts import _whole_steps

HOURS = [f"12-02 {h:02d}:00" for h in range(5, 11)]


@pytest.fixture
def request_context():
    with Flask(__name__).test_request_context():
        yield


@pytest.mark.parametrize("draw", [charts.line, charts.bars])
def test_a_chart_is_inline_svg_without_script_under_the_nonce(request_context, draw):
    svg = str(draw("Sends per hour", HOURS, {"sent": [4, 0, 0, 0, 0, 0], "skipped": [1, 0, 0, 0, 0, 0]}))
    assert "<script" not in svg and " style=" not in svg
    assert re.search(r'<style nonce="[^"]+">', svg)
    assert 'aria-label="Sends per hour"' in svg
    # the legend is drawn inside the picture, not below its edge (pygal's column option cut it off)
    height = float(re.search(r'viewBox="0 0 \d+ (\d+)"', svg).group(1))
    legend_y = float(re.search(r'translate\([\d.]+, ([\d.]+)\)" class="legends"', svg).group(1))
    assert legend_y + 12 < height


def test_counts_get_whole_steps_on_the_axis(request_context):
    svg = str(charts.line("Clicks", HOURS, {"clicks": [3, 0, 0, 0, 0, 0]}))
    y_axis = svg[svg.index('class="axis y') :]
    y_axis = y_axis[: y_axis.index("</g></g>")] if "</g></g>" in y_axis else y_axis
    shown = re.findall(r"<text[^>]*>([\d.]+)</text>", y_axis)
    assert shown == ["0", "1", "2", "3"], shown


@pytest.mark.parametrize(
    ("top", "steps"),
    [
        (0, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (30, [0, 5, 10, 15, 20, 25, 30]),
        (99, [0, 20, 40, 60, 80, 100]),
        (123456, [0, 50000, 100000, 150000]),
    ],
)
def test_whole_steps(top, steps):
    assert _whole_steps(top) == steps
