"""A student's learning account as a self-contained HTML page for people (phone first).

One page, no external assets and no script: a summary (balance, exhausted or not, bonus granted,
master's degree), the statement table of R1.3 / R6.3 exactly as the seed's tables (the rows of
`tables.statement_lines`), what if: the balance if each unit of the latest year still without a
result is passed or failed (computed beforehand by `projection.what_if_results`, so no script),
and an inline SVG chart of the balance over the academic years.
Every text from the account is escaped with `html.escape`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from learning_account.domain.model import OPENING_BALANCE, format_academic_year
from learning_account.domain.numbers import QUARTERS_PER_CREDIT, credits_text
from learning_account.domain.statement import AccountView, StatementRow
from learning_account.entrypoints.tables import (
    PROJECTED_FOOTNOTE,
    PROJECTED_MARK,
    YEAR_LABEL,
    statement_lines,
)
from learning_account.processing.projection import WhatIf

LOW_BALANCE_LINE = 60 * QUARTERS_PER_CREDIT  # one standard year of 60 credits
LOW_BALANCE_LABEL = "60 credits (one year)"

_CSS = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6573; --line: #d8dde4;
  --accent: #1f5fbf; --warn: #b42318; --soft: #f4f6f9; --sixty: #b26a00; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #fff; }
main { max-width: 760px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.35rem; margin: 0 0 12px; overflow-wrap: anywhere; }
h2 { font-size: 1.1rem; margin: 28px 0 8px; }
.summary { background: var(--soft); border: 1px solid var(--line); border-radius: 12px;
  padding: 14px 16px; }
.balance { display: flex; align-items: baseline; flex-wrap: wrap; gap: 6px 10px; margin: 0; }
.balance .label { color: var(--muted); width: 100%; font-size: .9rem; }
.balance .value { font-size: 2.6rem; font-weight: 700; line-height: 1.1;
  font-variant-numeric: tabular-nums; }
.balance .unit { color: var(--muted); }
.state { display: inline-block; border-radius: 999px; padding: 2px 10px; font-size: .85rem;
  font-weight: 600; background: #e3f1e6; color: #1b6b32; }
.state.exhausted { background: #fde7e5; color: var(--warn); }
.exhausted-note { color: var(--warn); margin: 8px 0 0; }
dl.facts { display: grid; grid-template-columns: auto 1fr; gap: 4px 16px; margin: 12px 0 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; -webkit-overflow-scrolling: touch; border: 1px solid var(--line);
  border-radius: 10px; }
table { border-collapse: separate; border-spacing: 0; width: 100%;
  font-variant-numeric: tabular-nums; }
th, td { padding: 7px 9px; white-space: nowrap; text-align: right;
  border-bottom: 1px solid var(--line); }
thead th { background: var(--soft); font-weight: 600; }
tbody th { text-align: left; font-weight: 500; }
thead th:first-child { text-align: left; }
#what-if .if-passed { color: #1b6b32; font-weight: 600; }
#what-if .if-failed { color: var(--warn); font-weight: 600; }
tr.balance-row th, tr.balance-row td { font-weight: 700; border-bottom: 0;
  border-top: 2px solid var(--ink); }
.projected { font-style: italic; color: var(--muted); }
.footnote { color: var(--muted); font-size: .85rem; margin: 6px 0 0; }
figure { margin: 0; }
svg.chart { display: block; width: 100%; height: auto; }
svg.chart text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  fill: var(--muted); }
svg.chart .grid { stroke: var(--line); stroke-width: 1; }
svg.chart .zero { stroke: var(--ink); stroke-width: 1.5; }
svg.chart .sixty { stroke: var(--sixty); stroke-width: 1.5; stroke-dasharray: 6 4; }
svg.chart text.sixty-label { fill: var(--sixty); font-weight: 600; }
svg.chart .balance-line { fill: none; stroke: var(--accent); stroke-width: 2.5;
  stroke-linejoin: round; }
svg.chart .balance-line.projected-line { stroke-dasharray: 5 5; }
svg.chart circle { fill: var(--accent); stroke: #fff; stroke-width: 1.5; }
svg.chart circle.projected { fill: #fff; stroke: var(--accent); stroke-width: 2; }
svg.chart text.value { fill: var(--ink); font-weight: 600; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: 4px; }
"""


def _year_header(row: StatementRow) -> str:
    year = format_academic_year(row.academic_year)
    return f"{year}{PROJECTED_MARK}" if row.projected else year


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )


def render_error_page(status: int, message: str) -> str:
    """A plain page for 4xx/5xx answers of the view route."""
    body = (
        f"<h1>{html.escape(str(status))}: {html.escape(message)}</h1>\n"
        "<p>No learning account can be shown for this address.</p>\n"
    )
    return _page(f"{status} - learning account", body)


def render_account_page(
    student_id: str,
    view: AccountView,
    rows: list[StatementRow],
    what_if: WhatIf | None = None,
) -> str:
    """The whole page: summary, statement table, what-if table and balance chart (UTF-8 HTML5)."""
    title = f"Learning account of {student_id}"
    body = "".join(
        [
            f"<h1>{html.escape(title)}</h1>\n",
            _summary(view),
            '<section aria-labelledby="statement-title">\n'
            '<h2 id="statement-title">Statement</h2>\n',
            _statement_table(rows),
            "</section>\n",
            _what_if_section(what_if),
            '<section aria-labelledby="chart-title">\n'
            '<h2 id="chart-title">Balance over the academic years</h2>\n',
            _chart(rows),
            "</section>\n",
        ]
    )
    return _page(title, body)


def _summary(view: AccountView) -> str:
    state = (
        '<span class="state exhausted" id="state">exhausted</span>'
        if view.exhausted
        else '<span class="state" id="state">available</span>'
    )
    note = (
        '<p class="exhausted-note">The learning credit is exhausted (balance 0 or less): '
        "only a first master's programme (higher fee), a preparatory or transition programme, "
        "a bachelor-after-bachelor, a master-after-master, an examination contract or "
        "exceptional admission remain.</p>\n"
        if view.exhausted
        else ""
    )
    as_of = format_academic_year(view.as_of_academic_year)
    return (
        '<section class="summary" aria-label="Summary">\n'
        '<p class="balance"><span class="label">Balance</span>'
        f'<span class="value" id="balance">{html.escape(credits_text(view.balance))}</span>'
        f'<span class="unit">credits</span>{state}</p>\n'
        f"{note}"
        '<dl class="facts">\n'
        "<dt>Bonus granted</dt>"
        f'<dd id="bonus-granted">{html.escape(credits_text(view.bonus_granted))}</dd>\n'
        "<dt>Master's degree</dt>"
        f'<dd id="master-degree">{"recorded" if view.master_degree else "not recorded"}</dd>\n'
        f'<dt>As of academic year</dt><dd id="as-of">{html.escape(as_of)}</dd>\n'
        "</dl>\n</section>\n"
    )


def _statement_table(rows: Sequence[StatementRow]) -> str:
    head = [f'<th scope="col">{html.escape(YEAR_LABEL)}</th>']
    for row in rows:
        css = ' class="projected"' if row.projected else ""
        head.append(f'<th scope="col"{css}>{html.escape(_year_header(row))}</th>')
    body: list[str] = []
    for label, cells in statement_lines(rows):
        row_css = ' class="balance-row"' if label == "Balance" else ""
        tds = "".join(
            f'<td class="projected">{html.escape(cell)}</td>'
            if row.projected
            else f"<td>{html.escape(cell)}</td>"
            for row, cell in zip(rows, cells, strict=True)
        )
        body.append(f'<tr{row_css}><th scope="row">{html.escape(label)}</th>{tds}</tr>\n')
    footnote = (
        f'<p class="footnote">{html.escape(PROJECTED_FOOTNOTE)}</p>\n'
        if any(row.projected for row in rows)
        else ""
    )
    return (
        '<div class="table-wrap">\n<table id="statement">\n'
        f"<thead><tr>{''.join(head)}</tr></thead>\n"
        f"<tbody>\n{''.join(body)}</tbody>\n</table>\n</div>\n{footnote}"
    )


def _what_if_section(what_if: WhatIf | None) -> str:
    """One row per unit still without a result: the balance if passed, and if failed."""
    if what_if is None or not what_if.units:
        return ""
    year = html.escape(format_academic_year(what_if.academic_year))
    rows = "".join(
        f'<tr data-unit="{html.escape(unit.code)}"><th scope="row">{html.escape(unit.code)}</th>'
        f"<td>{html.escape(credits_text(unit.credits))}</td>"
        f'<td class="if-passed">{html.escape(credits_text(unit.if_passed))}</td>'
        f'<td class="if-failed">{html.escape(credits_text(unit.if_failed))}</td></tr>\n'
        for unit in what_if.units
    )
    return (
        '<section aria-labelledby="what-if-title">\n'
        f'<h2 id="what-if-title">What if: course units of {year} without a result</h2>\n'
        '<div class="table-wrap">\n<table id="what-if">\n'
        '<thead><tr><th scope="col">Unit</th><th scope="col">Credits</th>'
        '<th scope="col">If passed</th><th scope="col">If failed</th></tr>'
        f"</thead>\n<tbody>\n{rows}</tbody>\n</table>\n</div>\n"
        '<p class="footnote">The balance if that unit alone is passed, or failed, everything '
        "else as it is now, by the same rules as the account.</p>\n"
        "</section>\n"
    )


@dataclass(frozen=True, slots=True)
class _Point:
    label: str
    balance: int
    projected: bool
    is_start: bool


# chart geometry, in viewBox units (the SVG scales with the width of the page)
_WIDTH = 400
_TOP = 22
_PLOT_HEIGHT = 200
_LEFT = 40  # room for the tick labels
_RIGHT = 8
_INSET = 30  # first and last point this far inside the plot: their labels stay centred


def _nice_step(span: int) -> int:
    """A step in quarter-credits (10, 20, 25, 50, ... credits) giving at most 6 intervals."""
    credits = max(span / QUARTERS_PER_CREDIT, 1)
    magnitude = 10 ** max(math.floor(math.log10(credits / 6)), 0)
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step >= 10 and credits / step <= 6:
            return int(step * QUARTERS_PER_CREDIT)
    return int(10 * magnitude * QUARTERS_PER_CREDIT)


def _chart(rows: Sequence[StatementRow]) -> str:
    points = [_Point("Start", OPENING_BALANCE, False, True)]
    points.extend(
        _Point(format_academic_year(row.academic_year), row.balance, row.projected, False)
        for row in rows
    )
    values = [point.balance for point in points]
    step = _nice_step(max(max(values), LOW_BALANCE_LINE, 0) - min(min(values), 0))
    low = min(0, math.floor(min(values) / step) * step)
    high = max(LOW_BALANCE_LINE, math.ceil(max(values) / step) * step)
    if high == max(values):
        high += step  # room for the value label above the highest point
    plot_width = _WIDTH - _LEFT - _RIGHT
    gap = (plot_width - 2 * _INSET) / max(len(points) - 1, 1)
    rotate = gap < 62  # "2016-2017" no longer fits under its point: slant the labels
    bottom = 70 if rotate else 34
    height = _TOP + _PLOT_HEIGHT + bottom

    def x(index: int) -> float:
        return _LEFT + (_INSET + index * gap if len(points) > 1 else plot_width / 2)

    def y(quarters: int) -> float:
        return _TOP + (high - quarters) * _PLOT_HEIGHT / (high - low)

    parts: list[str] = []
    for tick in range(low, high + 1, step):
        css = "zero" if tick == 0 else "grid"
        parts.append(
            f'<line class="{css}" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" '
            f'y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{html.escape(credits_text(tick))}</text>"
        )
    parts.append(
        f'<line class="sixty" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" '
        f'y1="{y(LOW_BALANCE_LINE):.1f}" y2="{y(LOW_BALANCE_LINE):.1f}"/>'
        f'<text class="sixty-label" x="{_WIDTH - _RIGHT - 2}" y="{y(LOW_BALANCE_LINE) - 5:.1f}" '
        f'text-anchor="end">{html.escape(LOW_BALANCE_LABEL)}</text>'
    )
    booked = [i for i, point in enumerate(points) if not point.projected]
    projected = [i for i, point in enumerate(points) if point.projected]

    def polyline(indexes: Sequence[int], css: str) -> str:
        coords = " ".join(f"{x(i):.1f},{y(points[i].balance):.1f}" for i in indexes)
        return f'<polyline class="{css}" points="{coords}"/>'

    if len(booked) > 1:
        parts.append(polyline(booked, "balance-line"))
    if projected:
        parts.append(polyline([booked[-1], *projected], "balance-line projected-line"))
    for index, point in enumerate(points):
        value = html.escape(credits_text(point.balance))
        label = html.escape(point.label + (PROJECTED_MARK if point.projected else ""))
        css = "start-point" if point.is_start else "point"
        if point.projected:
            css += " projected"
        year = "" if point.is_start else f' data-year="{html.escape(point.label)}"'
        parts.append(
            f'<circle class="{css}"{year} data-balance="{value}" cx="{x(index):.1f}" '
            f'cy="{y(point.balance):.1f}" r="4.5"><title>{label}: {value}</title></circle>'
            f'<text class="value" x="{x(index):.1f}" y="{y(point.balance) - 9:.1f}" '
            f'text-anchor="middle">{value}</text>'
        )
        base = _TOP + _PLOT_HEIGHT + 16
        if rotate:
            parts.append(
                f'<text x="{x(index):.1f}" y="{base:.1f}" text-anchor="end" '
                f'transform="rotate(-40 {x(index):.1f} {base:.1f})">{label}</text>'
            )
        else:
            parts.append(
                f'<text x="{x(index):.1f}" y="{base:.1f}" text-anchor="middle">{label}</text>'
            )
    caption = (
        "Balance at the start and after each academic year; the dashed line is 60 credits, "
        "one standard year"
        + ("; dashed segments and hollow points are projected years (R6.3)." if projected else ".")
    )
    summary = ", ".join(
        f"{point.label}{PROJECTED_MARK if point.projected else ''} {credits_text(point.balance)}"
        for point in points
    )
    return (
        "<figure>\n"
        f'<svg class="chart" id="balance-chart" viewBox="0 0 {_WIDTH} {height}" '
        'role="img" aria-labelledby="chart-svg-title" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-svg-title">Balance: {html.escape(summary)}</title>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
        f"<figcaption>{html.escape(caption)}</figcaption>\n</figure>\n"
    )
