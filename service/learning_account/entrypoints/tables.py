"""A statement (R1.3) as a text table like the seed's: one column per academic year.

`render_statement_text` draws it with rich (colours only when asked for);
`render_statement_plain` writes fixed-width columns without box drawing, stable for tests and logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import StringIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from learning_account.domain.model import format_academic_year
from learning_account.domain.numbers import credits_text
from learning_account.domain.statement import StatementRow

PROJECTED_MARK = "*"
PROJECTED_FOOTNOTE = (
    "* projected: a year completed without enrolment, rebuilt by today but not yet booked (R6.3)"
)
YEAR_LABEL = "Academic year"


def _signed_or_blank(quarters: int) -> str:
    """`+60` / `-60`, and an empty cell for zero, like the seed's tables."""
    if quarters == 0:
        return ""
    text = credits_text(quarters)
    return text if quarters < 0 else f"+{text}"


# (label, cell text, shown only when a row has a non-zero value)
_LINES: tuple[
    tuple[str, Callable[[StatementRow], str], Callable[[StatementRow], int] | None], ...
] = (
    ("Start", lambda row: credits_text(row.start), None),
    ("Credits invested", lambda row: _signed_or_blank(row.invested), None),
    ("Credits acquired", lambda row: _signed_or_blank(row.acquired), None),
    ("Bonus", lambda row: _signed_or_blank(row.bonus), None),
    ("Refunded", lambda row: _signed_or_blank(row.refunded), lambda row: row.refunded),
    ("Restored", lambda row: _signed_or_blank(row.restored), lambda row: row.restored),
    (
        "Degree deduction",
        lambda row: _signed_or_blank(row.degree_deduction),
        lambda row: row.degree_deduction,
    ),
    ("Rebuilt", lambda row: _signed_or_blank(row.rebuilt), lambda row: row.rebuilt),
    ("Balance", lambda row: credits_text(row.balance), None),
)


def _year_header(row: StatementRow) -> str:
    year = format_academic_year(row.academic_year)
    return f"{year}{PROJECTED_MARK}" if row.projected else year


def statement_lines(rows: Sequence[StatementRow]) -> list[tuple[str, list[str]]]:
    """The table's body as (label, cells) pairs, optional lines left out when all zero."""
    lines: list[tuple[str, list[str]]] = []
    for label, cell, optional_value in _LINES:
        if optional_value is not None and not any(optional_value(row) for row in rows):
            continue
        lines.append((label, [cell(row) for row in rows]))
    return lines


def _title(student_id: str) -> str:
    return f"Learning account of {student_id}"


def render_statement_plain(student_id: str, rows: Sequence[StatementRow]) -> str:
    """Fixed-width text, no colours or box drawing: labels left, amounts right-aligned."""
    headers = [_year_header(row) for row in rows]
    body = statement_lines(rows)
    label_width = max(len(label) for label in [YEAR_LABEL, *(label for label, _ in body)])
    widths = [
        max(len(headers[column]), *(len(cells[column]) for _, cells in body))
        for column in range(len(rows))
    ]

    def line(label: str, cells: Sequence[str]) -> str:
        parts = [label.ljust(label_width)]
        parts.extend(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(parts).rstrip()

    out = [_title(student_id), line(YEAR_LABEL, headers)]
    out.extend(line(label, cells) for label, cells in body)
    if any(row.projected for row in rows):
        out.append(PROJECTED_FOOTNOTE)
    return "\n".join(out) + "\n"


def render_statement_text(
    student_id: str, rows: Sequence[StatementRow], *, color: bool = False
) -> str:
    """The statement as a rich table; ANSI colours only with `color=True` (pass isatty())."""
    table = Table(
        title=Text(_title(student_id)),
        box=box.SIMPLE_HEAD,
        header_style="bold" if color else "",
        title_style="bold" if color else "",
    )
    table.add_column(YEAR_LABEL, justify="left", no_wrap=True)
    for row in rows:
        table.add_column(
            Text(_year_header(row), style="italic" if color and row.projected else ""),
            justify="right",
            no_wrap=True,
        )
    for label, cells in statement_lines(rows):
        style = "bold" if color and label == "Balance" else ""
        table.add_row(Text(label, style=style), *(Text(cell, style=style) for cell in cells))
    # wide enough that no column wraps, however many years there are
    width = max(len(PROJECTED_FOOTNOTE), 22 + 14 * len(rows))
    buffer = StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
    )
    console.print(table)
    if any(row.projected for row in rows):
        console.print(Text(PROJECTED_FOOTNOTE))  # not a caption: that wraps at the table's width
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"
