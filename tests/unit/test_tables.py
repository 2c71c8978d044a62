"""The statement as text tables: the seed's numbers in the seed's rows."""

from __future__ import annotations

from learning_account.domain.statement import StatementRow
from learning_account.entrypoints.tables import (
    PROJECTED_FOOTNOTE,
    render_statement_plain,
    render_statement_text,
)


def row(
    year: int,
    start: float,
    balance: float,
    *,
    invested: float = 0,
    acquired: float = 0,
    bonus: float = 0,
    refunded: float = 0,
    restored: float = 0,
    degree_deduction: float = 0,
    rebuilt: float = 0,
    projected: bool = False,
) -> StatementRow:
    """A row given in credits (the table works in quarter-credits)."""

    def quarters(credits: float) -> int:
        return int(credits * 4)

    return StatementRow(
        academic_year=year,
        start=quarters(start),
        invested=quarters(invested),
        acquired=quarters(acquired),
        bonus=quarters(bonus),
        refunded=quarters(refunded),
        restored=quarters(restored),
        degree_deduction=quarters(degree_deduction),
        rebuilt=quarters(rebuilt),
        balance=quarters(balance),
        projected=projected,
    )


MARY = [
    row(2016, 140, 200, invested=-60, acquired=60, bonus=60),
    row(2017, 200, 200, invested=-60, acquired=60),
    row(2018, 200, 200, invested=-60, acquired=60),
]

THOMAS = [
    row(2016, 140, 152, invested=-60, acquired=36, bonus=36),
    row(2017, 152, 155, invested=-63, acquired=42, bonus=24),
    row(2018, 155, 140, invested=-60, acquired=45),
    row(2019, 140, 140, invested=-57, acquired=57),
]


def cells(text: str, label: str) -> list[str]:
    """The cells of the line starting with `label`, split on whitespace."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(label):
            return stripped[len(label) :].split()
    raise AssertionError(f"no line {label!r} in\n{text}")


def test_plain_table_of_mary_has_the_seed_numbers() -> None:
    assert render_statement_plain("mary", MARY) == (
        "Learning account of mary\n"
        "Academic year     2016-2017  2017-2018  2018-2019\n"
        "Start                   140        200        200\n"
        "Credits invested        -60        -60        -60\n"
        "Credits acquired        +60        +60        +60\n"
        "Bonus                   +60\n"
        "Balance                 200        200        200\n"
    )


def test_rich_table_of_mary_has_the_seed_numbers_in_the_right_rows() -> None:
    text = render_statement_text("mary", MARY)
    assert cells(text, "Academic year") == ["2016-2017", "2017-2018", "2018-2019"]
    assert cells(text, "Start") == ["140", "200", "200"]
    assert cells(text, "Credits invested") == ["-60", "-60", "-60"]
    assert cells(text, "Credits acquired") == ["+60", "+60", "+60"]
    assert cells(text, "Bonus") == ["+60"]
    assert cells(text, "Balance") == ["200", "200", "200"]
    assert "\x1b[" not in text  # no colours unless asked for


def test_tables_of_thomas_have_the_seed_numbers_in_the_right_rows() -> None:
    for text in (render_statement_text("thomas", THOMAS), render_statement_plain("thomas", THOMAS)):
        assert "thomas" in text
        assert cells(text, "Academic year") == ["2016-2017", "2017-2018", "2018-2019", "2019-2020"]
        assert cells(text, "Start") == ["140", "152", "155", "140"]
        assert cells(text, "Credits invested") == ["-60", "-63", "-60", "-57"]
        assert cells(text, "Credits acquired") == ["+36", "+42", "+45", "+57"]
        assert cells(text, "Bonus") == ["+36", "+24"]
        assert cells(text, "Balance") == ["152", "155", "140", "140"]


def test_bonus_blank_cells_stay_in_their_columns() -> None:
    text = render_statement_plain("thomas", THOMAS)
    header = next(line for line in text.splitlines() if line.startswith("Academic year"))
    bonus = next(line for line in text.splitlines() if line.startswith("Bonus"))
    # the last bonus cell ends under the end of the 2017-2018 header
    assert bonus.rstrip().endswith("+24")
    assert len(bonus.rstrip()) == header.index("2017-2018") + len("2017-2018")


def test_optional_rows_only_when_some_year_has_them() -> None:
    for text in (render_statement_plain("mary", MARY), render_statement_text("mary", MARY)):
        for label in ("Refunded", "Restored", "Degree deduction", "Rebuilt"):
            assert label not in text
    graduate = [
        row(2016, 140, 140, invested=-6, refunded=6),
        row(2017, 140, 0, degree_deduction=-140),
    ]
    text = render_statement_plain("grad", graduate)
    assert cells(text, "Refunded") == ["+6"]
    assert cells(text, "Degree deduction") == ["-140"]
    assert "Rebuilt" not in text
    restored = [row(2016, 140, 140, invested=-6, restored=6), row(2017, 140, 140)]
    text = render_statement_plain("fm", restored)
    assert cells(text, "Restored") == ["+6"]


def test_projected_years_are_marked_with_a_footnote() -> None:
    rows = [
        row(2016, 140, 30, invested=-110),
        row(2017, 30, 40, rebuilt=10, projected=True),
        row(2018, 40, 50, rebuilt=10, projected=True),
    ]
    for text in (render_statement_plain("gap", rows), render_statement_text("gap", rows)):
        assert cells(text, "Academic year") == ["2016-2017", "2017-2018*", "2018-2019*"]
        assert cells(text, "Rebuilt") == ["+10", "+10"]
        assert cells(text, "Balance") == ["30", "40", "50"]
        assert PROJECTED_FOOTNOTE in text
    assert PROJECTED_FOOTNOTE not in render_statement_plain("mary", MARY)


def test_fractional_amounts_without_trailing_zero() -> None:
    rows = [row(2016, 140, 134.5, invested=-5.5)]
    text = render_statement_plain("frac", rows)
    assert cells(text, "Credits invested") == ["-5.5"]
    assert cells(text, "Balance") == ["134.5"]


def test_negative_balance_is_shown_with_its_sign() -> None:
    text = render_statement_plain("spent", [row(2019, 140, -10, invested=-150)])
    assert cells(text, "Balance") == ["-10"]


def test_colour_only_when_asked_for() -> None:
    assert "\x1b[" in render_statement_text("mary", MARY, color=True)
