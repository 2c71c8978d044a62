"""Section 8 of rules.md: every worked example, exactly."""

from datetime import date

from scenario import BalanceChanged, CreditExhausted, EventRejected, Student, units

COLUMNS = (
    "year",
    "start",
    "invested",
    "acquired",
    "bonus",
    "refunded",
    "degree",
    "rebuilt",
    "balance",
    "projected",
)


def mary() -> Student:
    student = Student("mary")
    for year in (2016, 2017, 2018):
        package = units(f"Y{year}-", 10, 6)
        student.register(year, package)
        student.pass_all(year, list(package))
    return student


def thomas() -> Student:
    student = Student("thomas")
    first = units("A", 10, 6)
    student.register(2016, first)
    student.pass_all(2016, [f"A{i}" for i in range(1, 7)])  # 36
    second = {**{f"A{i}": 6 for i in range(7, 11)}, **units("B", 13, 3)}  # 24 + 39 = 63
    student.register(2017, second)
    student.pass_all(2017, [f"A{i}" for i in range(7, 11)] + [f"B{i}" for i in range(1, 7)])
    third = {**{f"B{i}": 3 for i in range(7, 14)}, **units("C", 13, 3)}  # 21 + 39 = 60
    student.register(2018, third)
    student.pass_all(2018, [f"B{i}" for i in range(7, 14)] + [f"C{i}" for i in range(1, 9)])
    fourth = {**{f"C{i}": 3 for i in range(9, 14)}, **units("D", 14, 3)}  # 15 + 42 = 57
    student.register(2019, fourth)
    student.pass_all(2019, list(fourth))
    return student


def test_mary_statement_matches_the_seed_row_for_row() -> None:
    assert mary().statement_table(current_year=2019) == [
        (2016, 140, -60, 60, 60, 0, 0, 0, 200, False),
        (2017, 200, -60, 60, 0, 0, 0, 0, 200, False),
        (2018, 200, -60, 60, 0, 0, 0, 0, 200, False),
    ]


def test_thomas_statement_matches_the_seed_row_for_row() -> None:
    assert thomas().statement_table(current_year=2020) == [
        (2016, 140, -60, 36, 36, 0, 0, 0, 152, False),
        (2017, 152, -63, 42, 24, 0, 0, 0, 155, False),
        (2018, 155, -60, 45, 0, 0, 0, 0, 140, False),
        (2019, 140, -57, 57, 0, 0, 0, 0, 140, False),
    ]


def test_mary_first_master_then_degree_ends_at_60() -> None:
    student = mary()
    student.register(2019, {"MA1": 60}, kind="master")
    student.result(2019, "MA1")
    assert student.balance == 200 - 60 + 60
    student.degree(2019, "master")
    assert student.balance == 60


def test_student_at_4_goes_negative_then_only_first_master_is_accepted() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 16})
    assert student.balance == 4
    decision = student.register(2016, {"D": 6, "E": 6})
    changed = decision.events[0]
    assert student.balance == -8
    assert changed.uncovered_credits == 8 * 4
    assert changed.additional_fee is False
    assert student.last_events(CreditExhausted)
    refused = student.register(2017, {"F": 6})
    assert [event.reason for event in refused.events if isinstance(event, EventRejected)] == [
        "insufficient_learning_credit"
    ]
    master = student.register(2017, {"M1": 60}, kind="master")
    assert master.events[0].additional_fee is True
    assert master.events[0].uncovered_credits == 60 * 4
    assert student.balance == -68


def generation_change(deregistered_on: date, reenrolled_on: date) -> float:
    student = Student()
    student.register(2016, {"PSY101": 6}, starts_on=date(2016, 9, 26))
    before = student.balance
    assert before is not None
    student.deregister(
        2016, ["PSY101"], deregistered_on, reason="programme_change", reenrolled_on=reenrolled_on
    )
    assert student.balance is not None
    return student.balance - before


def test_generation_student_changing_programme_before_december_gets_all_back() -> None:
    assert generation_change(date(2016, 11, 20), date(2016, 11, 25)) == 6


def test_generation_student_reenrolling_after_december_first_gets_half_back() -> None:
    assert generation_change(date(2016, 11, 28), date(2016, 12, 2)) == 3


def test_generation_student_changing_after_march_15_loses_the_credits() -> None:
    assert generation_change(date(2017, 3, 20), date(2017, 3, 21)) == 0


def not_generation_withdrawal(deregistered_on: date) -> float:
    student = Student()
    student.register(2015, {"OLD": 6})  # 2015 is the generation year, 2016 is not
    student.register(2016, {"PSY101": 6}, starts_on=date(2016, 9, 26))
    before = student.balance
    assert before is not None
    student.deregister(2016, ["PSY101"], deregistered_on, reason="withdrawal")
    assert student.balance is not None
    return student.balance - before


def test_non_generation_student_before_border_date_gets_all_back() -> None:
    assert not_generation_withdrawal(date(2016, 10, 9)) == 6


def test_non_generation_student_on_border_date_loses_the_credits() -> None:
    assert not_generation_withdrawal(date(2016, 10, 10)) == 0


def test_account_at_30_rebuilds_two_years_before_the_registration_applies() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 50})
    assert student.balance == 30
    decision = student.register(2019, {"C": 6})
    entries = decision.events[0].entries
    assert [(e.kind, e.amount / 4, e.academic_year) for e in entries[:2]] == [
        ("rebuilt", 10, 2017),
        ("rebuilt", 10, 2018),
    ]
    assert decision.events[0].previous_balance == 30 * 4
    assert student.balance == 50 - 6


def test_account_at_55_rebuilds_one_entry_of_5() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 25})
    assert student.balance == 55
    decision = student.register(2019, {"C": 6})
    rebuilt = [e for e in decision.events[0].entries if e.kind == "rebuilt"]
    assert [(e.amount / 4, e.academic_year) for e in rebuilt] == [(5, 2017)]


def test_credit_contract_in_a_master_after_master_deducts_its_credits() -> None:
    credit = Student()
    credit.register(2016, {"MAM1": 12, "MAM2": 8}, kind="master_after_master", contract="credit")
    assert credit.balance == 140 - 20
    diploma = Student()
    diploma.register(2016, {"MAM1": 12, "MAM2": 8}, kind="master_after_master")
    assert diploma.balance is None  # nothing deducted, no account opened


def test_correction_example_takes_back_and_grants_in_processing_order() -> None:
    student = Student()
    student.register(2016, {"A": 6, "B": 6, "C": 6})
    student.result(2016, "A")
    assert student.balance == 140 - 6  # C stays invested in this variant
    student.result(2016, "B", "failed")
    student.correct(2016, "B", "passed")
    assert student.balance == 152 - 6
    assert student.account.bonus_granted == 12 * 4
    student.correct(2016, "A", "failed")
    changed = student.last_events(BalanceChanged)[0]
    assert [(e.kind, e.amount / 4) for e in changed.entries] == [("acquired", -6), ("bonus", -6)]
    assert student.balance == 140 - 6
    assert student.account.bonus_granted == 6 * 4
    student.correct(2016, "C", "passed")
    assert [event.reason for event in student.last_events(EventRejected)] == [
        "no_result_to_correct"
    ]


def test_correction_example_row_reads_as_the_rules_say() -> None:
    student = Student()
    student.register(2016, {"A": 6, "B": 6})
    assert student.balance == 128
    student.result(2016, "A")
    assert student.balance == 140
    student.result(2016, "B", "failed")
    assert student.balance == 140
    student.correct(2016, "B", "passed")
    assert (student.balance, student.account.bonus_granted / 4) == (152, 12)
    student.correct(2016, "A", "failed")
    assert (student.balance, student.account.bonus_granted / 4) == (140, 6)
    assert student.statement_table(current_year=2017) == [
        (2016, 140, -12, 6, 6, 0, 0, 0, 140, False)
    ]


def test_force_majeure_example_restores_the_lost_unit_once() -> None:
    student = Student()
    student.register(2016, {"U": 6, "P": 6})
    student.result(2016, "P")
    assert student.balance == 140  # P passed: 6 + 6 bonus back
    decision = student.restore(2016, ["U"])
    changed = decision.events[0]
    assert [(e.kind, e.amount / 4, e.academic_year) for e in changed.entries] == [
        ("restored", 6, 2016)
    ]
    assert student.balance == 146
    for codes in (["U"], ["P"]):
        student.restore(2016, codes)
        assert [e.reason for e in student.last_events(EventRejected)] == ["nothing_to_restore"]
    student.result(2016, "U")
    assert [e.reason for e in student.last_events(EventRejected)] == ["result_already_recorded"]
    assert student.balance == 146


def test_force_majeure_example_for_a_student_with_only_u() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    assert student.balance == 134
    student.restore(2016, ["U"])
    assert student.balance == 140
    assert student.statement_rows(current_year=2018)[0]["restored"] == 6


def test_force_majeure_example_half_refunded_unit_restores_the_other_half() -> None:
    student = Student()
    student.register(2016, {"U": 6}, starts_on=date(2016, 9, 26))
    student.deregister(
        2016, ["U"], date(2016, 11, 28), reason="programme_change", reenrolled_on=date(2016, 12, 2)
    )
    assert student.balance == 137
    student.restore(2016, ["U"])
    assert student.balance == 140
