"""One or more tests per rule of rules.md (R1–R7), on the pure core."""

from datetime import date

import pytest
from scenario import BalanceChanged, CreditExhausted, CreditLow, EventRejected, Student, units

from learning_account.domain.model import Policy, UnitRegistration
from learning_account.domain.rebuilding import rebuild_entries
from learning_account.domain.rules import deregistration_refund
from learning_account.domain.statement import account_view


def reasons(student: Student) -> list[str]:
    return [str(event.reason) for event in student.last_events(EventRejected)]


# --- R1 the account -------------------------------------------------------------------------


def test_first_registration_using_the_account_opens_it_at_140() -> None:
    student = Student()
    decision = student.register(2016, {"A": 6})
    changed = decision.events[0]
    assert isinstance(changed, BalanceChanged)
    assert changed.previous_balance == 0
    assert [(e.kind, e.amount) for e in changed.entries] == [("opened", 560), ("invested", -24)]
    assert student.balance == 134


def test_balance_may_become_negative() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 60})
    assert student.balance == -40


def test_late_entry_for_an_earlier_year_shifts_the_rows_after_it() -> None:
    student = Student()
    student.register(2017, {"B": 10})
    student.register(2016, {"A": 6})
    assert student.statement_table(current_year=2018) == [
        (2016, 140, -6, 0, 0, 0, 0, 0, 134, False),
        (2017, 134, -10, 0, 0, 0, 0, 0, 124, False),
    ]


# --- R2 registration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "contract"),
    [
        ("bachelor", "exam"),
        ("master", "exam"),
        ("preparatory", "diploma"),
        ("bachelor_after_bachelor", "diploma"),
        ("master_after_master", "diploma"),
    ],
)
def test_registration_outside_the_account_changes_no_balance(kind: str, contract: str) -> None:
    student = Student()
    decision = student.register(2016, {"A": 6}, kind=kind, contract=contract)
    assert decision.events == ()
    assert student.balance is None
    assert student.account.last_enrolment_year == 2016


def test_registration_outside_the_account_leaves_an_open_account_alone() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    decision = student.register(2016, {"B": 6}, contract="exam")
    assert decision.events == ()
    assert student.balance == 134


def test_registration_deducts_the_sum_of_its_units() -> None:
    student = Student()
    student.register(2016, {"A": 6, "B": 4.5, "C": 0.5})
    assert student.balance == 140 - 11


@pytest.mark.parametrize(
    "kind", ["bachelor", "master", "preparatory", "bachelor_after_bachelor", "master_after_master"]
)
def test_credit_contract_uses_the_account_in_every_programme_kind(kind: str) -> None:
    student = Student()
    decision = student.register(2016, {"A": 6}, kind=kind, contract="credit")
    assert [(e.kind, e.amount) for e in decision.events[0].entries] == [
        ("opened", 560),
        ("invested", -24),
    ]
    assert student.balance == 134
    assert student.account.units[(2016, "A")].uses_account


def test_registration_beyond_the_balance_is_accepted_with_uncovered_credits() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})
    assert student.balance == 10
    decision = student.register(2017, {"D": 60})
    changed = decision.events[0]
    assert student.balance == -50
    assert changed.uncovered_credits == 50 * 4
    assert changed.additional_fee is False


def test_registration_with_zero_balance_is_refused() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 20})
    assert student.balance == 0
    student.register(2017, {"D": 6})
    assert reasons(student) == ["insufficient_learning_credit"]
    assert student.balance == 0
    assert (2017, "D") not in student.account.units
    assert student.account.last_enrolment_year == 2016


def test_exceptional_admission_is_accepted_with_additional_fee() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 30})
    decision = student.register(2017, {"D": 6}, exceptional_admission=True)
    changed = decision.events[0]
    assert changed.additional_fee is True
    assert changed.uncovered_credits == 24
    assert student.balance == -16


def test_master_after_a_master_degree_is_not_a_first_master() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})
    student.degree(2016, "master")
    student.register(2017, {"M": 6}, kind="master")
    assert reasons(student) == ["insufficient_learning_credit"]


def test_unit_already_registered_under_any_contract_refuses_the_whole_event() -> None:
    student = Student()
    student.register(2016, {"A": 6}, contract="exam")
    student.register(2016, {"B": 6, "A": 6})
    assert reasons(student) == ["already_registered"]
    assert student.balance is None
    assert (2016, "B") not in student.account.units


def test_same_unit_in_another_year_may_be_registered() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.register(2017, {"A": 6})
    assert student.balance == 128


def test_deregistered_unit_can_be_registered_again() -> None:
    student = Student()
    student.register(2016, {"A": 6}, starts_on=date(2016, 9, 26))
    student.deregister(2016, ["A"], date(2016, 9, 30))
    student.register(2016, {"A": 6})
    assert reasons(student) == []
    assert student.balance == 134


# --- R3 exam results ------------------------------------------------------------------------


def test_passed_result_returns_credits_and_bonus() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    decision = student.result(2016, "A")
    assert [(e.kind, e.amount) for e in decision.events[0].entries] == [
        ("acquired", 24),
        ("bonus", 24),
    ]
    assert student.balance == 146


@pytest.mark.parametrize("outcome", ["failed", "tolerated"])
def test_failed_or_tolerated_result_changes_nothing_and_publishes_nothing(outcome: str) -> None:
    student = Student()
    student.register(2016, {"A": 6})
    decision = student.result(2016, "A", outcome)
    assert decision.events == ()
    assert student.balance == 134


def test_bonus_stops_at_60_and_spreads_over_years() -> None:
    student = Student()
    student.register(2016, {"A": 50})
    student.result(2016, "A")
    student.register(2017, {"B": 20})
    decision = student.result(2017, "B")
    assert [(e.kind, e.amount / 4) for e in decision.events[0].entries] == [
        ("acquired", 20),
        ("bonus", 10),
    ]
    assert student.account.bonus_granted == 240


def test_credit_contract_results_earn_no_bonus_and_do_not_count_toward_60() -> None:
    student = Student()
    student.register(2016, {"A": 30}, contract="credit")
    student.result(2016, "A")
    assert student.balance == 140
    student.register(2016, {"B": 60})
    student.result(2016, "B")
    assert student.account.bonus_granted == 240
    assert student.balance == 200


def test_no_bonus_once_a_rebuild_added_credits() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})
    student.register(2019, {"D": 6})  # rebuilds 2017 and 2018
    decision = student.result(2019, "D")
    assert [e.kind for e in decision.events[0].entries] == ["acquired"]


def test_bonus_follows_processing_order() -> None:
    student = Student()
    student.register(2016, {"A": 40, "B": 40})
    student.result(2016, "B")
    decision = student.result(2016, "A")
    assert [(e.kind, e.amount / 4) for e in decision.events[0].entries] == [
        ("acquired", 40),
        ("bonus", 20),
    ]


def test_result_outside_the_account_changes_nothing() -> None:
    student = Student()
    student.register(2016, {"A": 6}, contract="exam")
    decision = student.result(2016, "A")
    assert decision.events == ()
    student.result(2016, "A")
    assert reasons(student) == ["result_already_recorded"]


def test_second_final_result_is_refused() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.result(2016, "A", "failed")
    student.result(2016, "A", "passed")
    assert reasons(student) == ["result_already_recorded"]
    assert student.balance == 134


def test_result_before_its_registration_is_held_then_applied_after_it() -> None:
    student = Student()
    held = student.result(2016, "A")
    assert held.events == ()
    assert len(student.account.held) == 1
    decision = student.register(2016, {"A": 6, "B": 6})
    changes = [e for e in decision.events if isinstance(e, BalanceChanged)]
    assert [c.caused_by.type for c in changes] == [
        "be.flanders.learning-account.course-units-registered.v1",
        "be.flanders.learning-account.exam-result-recorded.v1",
    ]
    assert changes[1].previous_balance == changes[0].balance
    assert student.balance == 140 - 12 + 12
    assert student.account.held == ()


def test_held_result_is_refused_when_its_registration_is_refused() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 20})
    student.result(2017, "X")
    student.register(2017, {"X": 6})
    assert reasons(student) == ["insufficient_learning_credit", "unknown_registration"]
    assert student.account.held == ()


def test_held_result_is_refused_after_the_holding_time() -> None:
    student = Student(policy=Policy(result_hold_seconds=60))
    student.result(2016, "A")
    student.wait(61)
    student.register(2016, {"A": 6})
    assert reasons(student) == ["unknown_registration"]
    assert student.balance == 134


def test_result_for_a_deregistered_unit_is_refused_not_registered() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.deregister(2016, ["A"], date(2016, 9, 30))
    student.result(2016, "A")
    assert reasons(student) == ["not_registered"]


# --- R3.7 corrections -----------------------------------------------------------------------


def entries_of(student: Student) -> list[tuple[str, float, str | None]]:
    [changed] = student.last_events(BalanceChanged)
    return [(str(e.kind), e.amount / 4, e.course_unit_code) for e in changed.entries]


def test_pass_corrected_to_fail_takes_back_credits_and_exactly_its_bonus() -> None:
    student = Student()
    student.register(2016, {"A": 50, "B": 20})
    student.result(2016, "A")  # bonus 50
    student.result(2016, "B")  # bonus 10: the cap
    student.correct(2016, "B", "failed")
    assert entries_of(student) == [("acquired", -20, "B"), ("bonus", -10, "B")]
    assert student.account.bonus_granted == 50 * 4
    assert student.balance == 140 - 70 + 50 + 50


def test_bonus_freed_by_a_correction_goes_to_the_next_pass() -> None:
    student = Student()
    student.register(2016, {"A": 50, "B": 20, "C": 10})
    student.result(2016, "A")
    student.result(2016, "B")  # bonus 10
    student.correct(2016, "A", "tolerated")  # frees 50
    assert student.account.bonus_granted == 10 * 4
    student.result(2016, "C")
    assert entries_of(student) == [("acquired", 10, "C"), ("bonus", 10, "C")]
    assert student.account.bonus_granted == 20 * 4


def test_fail_corrected_to_pass_acquires_as_a_result_processed_now() -> None:
    student = Student()
    student.register(2016, {"A": 50, "B": 20})
    student.result(2016, "A", "failed")
    student.result(2016, "B")  # bonus 20
    student.correct(2016, "A", "passed")  # 40 bonus left
    assert entries_of(student) == [("acquired", 50, "A"), ("bonus", 40, "A")]
    assert student.account.bonus_granted == 60 * 4
    [changed] = student.last_events(BalanceChanged)
    assert changed.academic_year == 2016


def test_fail_corrected_to_pass_under_a_credit_contract_gets_no_bonus() -> None:
    student = Student()
    student.register(2016, {"A": 6}, contract="credit")
    student.result(2016, "A", "failed")
    student.correct(2016, "A", "passed")
    assert entries_of(student) == [("acquired", 6, "A")]
    assert student.account.bonus_granted == 0


def test_pass_won_by_a_correction_after_a_rebuild_gets_no_bonus() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})  # 10
    student.register(2019, {"D": 6})  # rebuilds 2017 and 2018
    student.result(2019, "D", "failed")
    student.correct(2019, "D", "passed")
    assert entries_of(student) == [("acquired", 6, "D")]


def test_pass_corrected_to_fail_after_a_rebuild_still_takes_its_bonus_back() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})
    student.result(2016, "C")  # bonus 10: balance 30
    student.register(2019, {"D": 6})  # rebuilds 2017 and 2018
    decision = student.correct(2016, "C", "failed")
    assert entries_of(student) == [("acquired", -10, "C"), ("bonus", -10, "C")]
    assert decision.events[0].academic_year == 2016
    assert student.account.bonus_granted == 0


@pytest.mark.parametrize(
    ("recorded", "corrected"),
    [("failed", "tolerated"), ("tolerated", "failed"), ("failed", "failed"), ("passed", "passed")],
)
def test_correction_without_a_pass_won_or_lost_is_accepted_and_publishes_nothing(
    recorded: str, corrected: str
) -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.result(2016, "A", recorded)
    before = student.balance
    decision = student.correct(2016, "A", corrected)
    assert decision.events == ()
    assert student.balance == before
    assert student.account.units[(2016, "A")].result == corrected


def test_correction_of_a_unit_without_a_result_is_refused_no_result_to_correct() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.correct(2016, "A", "passed")
    assert reasons(student) == ["no_result_to_correct"]
    assert student.balance == 134


@pytest.mark.parametrize("deregistered", [False, True])
def test_correction_of_a_unit_not_registered_is_refused_not_registered(
    deregistered: bool,
) -> None:
    student = Student()
    student.register(2016, {"A": 6})
    if deregistered:
        student.deregister(2016, ["A"], date(2016, 9, 30))
    student.correct(2016 if deregistered else 2017, "A", "passed")
    assert reasons(student) == ["not_registered"]


def test_correction_behind_a_held_result_is_applied_right_after_it() -> None:
    student = Student()
    result = student.result(2016, "A")
    student.correct(2016, "A", "failed")
    assert student.last is not None and student.last.events == ()
    assert len(student.account.held) == 2
    decision = student.register(2016, {"A": 6})
    changes = [e for e in decision.events if isinstance(e, BalanceChanged)]
    assert [c.caused_by.type for c in changes] == [
        "be.flanders.learning-account.course-units-registered.v1",
        "be.flanders.learning-account.exam-result-recorded.v1",
        "be.flanders.learning-account.exam-result-corrected.v1",
    ]
    assert [c.balance / 4 for c in changes] == [134, 146, 134]
    assert student.account.held == () and result.events == ()
    assert student.account.bonus_granted == 0


def test_correction_behind_a_held_result_is_refused_with_it() -> None:
    student = Student(policy=Policy(result_hold_seconds=60))
    student.result(2016, "A")
    student.wait(30)
    student.correct(2016, "A", "failed")
    student.wait(31)  # the result's holding time is over, not the correction's own
    student.register(2016, {"A": 6})
    assert reasons(student) == ["unknown_registration", "unknown_registration"]
    assert student.account.held == ()


def test_correction_of_a_registration_outside_the_account_changes_nothing() -> None:
    student = Student()
    student.register(2016, {"A": 6}, contract="exam")
    student.result(2016, "A")
    decision = student.correct(2016, "A", "failed")
    assert decision.events == ()
    assert student.account.units[(2016, "A")].result == "failed"


def test_correction_is_announced_like_any_change() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 20})  # 0
    student.result(2016, "C")  # 40
    student.correct(2016, "C", "failed")  # back to 0
    assert [e.balance for e in student.last_events(CreditExhausted)] == [0]
    assert student.last_events(CreditLow) == []


# --- R3.8 force majeure ---------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [None, "failed", "tolerated"])
def test_restoration_gives_back_the_full_credits_of_a_lost_unit(outcome: str | None) -> None:
    student = Student()
    student.register(2016, {"U": 6, "V": 4})
    if outcome is not None:
        student.result(2016, "U", outcome)
    decision = student.restore(2016, ["U", "V"])
    assert entries_of(student) == [("restored", 6, "U"), ("restored", 4, "V")]
    assert decision.events[0].academic_year == 2016
    assert student.balance == 140
    assert student.account.bonus_granted == 0


def test_restoration_of_a_half_refunded_unit_gives_the_other_half() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.deregister(
        2016, ["U"], date(2016, 12, 1), reason="programme_change", reenrolled_on=date(2016, 12, 1)
    )
    assert student.balance == 137
    student.restore(2016, ["U"])
    assert entries_of(student) == [("restored", 3, "U")]


def test_restoration_after_a_pass_corrected_to_a_fail_is_full() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.result(2016, "U")
    student.correct(2016, "U", "failed")
    student.restore(2016, ["U"])
    assert entries_of(student) == [("restored", 6, "U")]
    assert student.balance == 140


@pytest.mark.parametrize("case", ["passed", "fully refunded", "already restored"])
def test_restoration_with_nothing_left_is_refused_whole(case: str) -> None:
    student = Student()
    student.register(2016, {"U": 6, "W": 6})
    if case == "passed":
        student.result(2016, "U")
    elif case == "fully refunded":
        student.deregister(2016, ["U"], date(2016, 9, 30))
    else:
        student.restore(2016, ["U"])
    before = student.balance
    student.restore(2016, ["W", "U"])
    assert reasons(student) == ["nothing_to_restore"]
    assert student.balance == before
    assert not student.account.units[(2016, "W")].restored


def test_restoration_naming_a_unit_never_registered_is_refused_not_registered() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.result(2016, "U")  # would be nothing_to_restore: not_registered comes first
    student.restore(2016, ["U", "Z"])
    assert reasons(student) == ["not_registered"]
    student.restore(2017, ["U"])
    assert reasons(student) == ["not_registered"]


def test_restoration_skips_units_outside_the_account() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.register(2016, {"X": 6}, contract="exam")
    student.restore(2016, ["X", "U"])
    assert entries_of(student) == [("restored", 6, "U")]
    assert student.restore(2016, ["X"]).events == ()


def test_restoration_concerns_the_current_registration_of_a_unit() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.deregister(2016, ["U"], date(2016, 9, 30))  # full refund
    student.register(2016, {"U": 6})
    student.restore(2016, ["U"])
    assert entries_of(student) == [("restored", 6, "U")]


def test_restored_unit_is_closed_to_results_and_corrections() -> None:
    student = Student()
    student.register(2016, {"U": 6, "F": 6})
    student.result(2016, "F", "failed")
    student.restore(2016, ["U", "F"])
    student.result(2016, "U")
    assert reasons(student) == ["result_already_recorded"]
    student.correct(2016, "F", "passed")
    assert reasons(student) == ["result_already_recorded"]
    student.correct(2016, "U", "passed")  # no result, but closed: closing comes first
    assert reasons(student) == ["result_already_recorded"]
    assert student.balance == 140


def test_deregistering_a_restored_unit_keeps_it_and_refunds_nothing() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.restore(2016, ["U"])
    decision = student.deregister(2016, ["U"], date(2016, 9, 30))
    assert decision.events == ()
    assert not student.account.units[(2016, "U")].deregistered
    student.result(2016, "U")
    assert reasons(student) == ["result_already_recorded"]


def test_restored_deregistered_unit_refuses_a_later_result_not_registered() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.deregister(
        2016, ["U"], date(2016, 12, 1), reason="programme_change", reenrolled_on=date(2016, 12, 1)
    )
    student.restore(2016, ["U"])
    student.result(2016, "U")
    assert reasons(student) == ["not_registered"]
    student.correct(2016, "U", "passed")
    assert reasons(student) == ["not_registered"]


def test_restored_credits_get_no_bonus_and_leave_the_first_60_open() -> None:
    student = Student()
    student.register(2016, {"U": 6, "A": 60})
    student.restore(2016, ["U"])
    student.result(2016, "A")
    assert entries_of(student) == [("acquired", 60, "A"), ("bonus", 60, "A")]


def test_restoration_is_booked_to_its_year_in_the_statement() -> None:
    student = Student()
    student.register(2016, {"U": 6})
    student.register(2017, {"V": 6})
    student.restore(2016, ["U"])
    rows = student.statement_rows(current_year=2018)
    assert [(r["academic_year"], r["restored"], r["balance"]) for r in rows] == [
        (2016, 6, 140),
        (2017, 0, 134),
    ]


def test_remaining_bonus_and_rebuild_reserve() -> None:
    student = Student()
    student.register(2016, {"A": 50, "B": 60, "C": 20})  # 10
    student.result(2016, "A")  # 110, bonus 50
    view = account_view(student.account, current_year=2017)
    assert (view.remaining_bonus / 4, view.rebuild_reserve / 4) == (10, 0)
    student.correct(2016, "A", "failed")  # 10, bonus 0
    view = account_view(student.account, current_year=2018)  # 2017 projected: 20
    assert (view.balance / 4, view.remaining_bonus / 4, view.rebuild_reserve / 4) == (20, 60, 40)
    student.register(2019, {"D": 6})  # rebuilt entries written
    view = account_view(student.account, current_year=2019)
    assert view.remaining_bonus == 0


# --- R4 degrees -----------------------------------------------------------------------------


def test_first_master_degree_deducts_140_once() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.degree(2016, "master")
    assert student.balance == -6
    assert student.account.master_degree
    decision = student.degree(2017, "master")
    assert decision.events == ()


def test_bachelor_degree_changes_nothing() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    assert student.degree(2016, "bachelor").events == ()


def test_degree_without_account_is_remembered() -> None:
    student = Student()
    student.degree(2014, "master")
    assert student.balance is None
    student.register(2016, {"M": 6}, kind="master")
    assert student.balance == 134  # no 140 deduction afterwards
    student.register(2016, {"A": 60, "B": 60, "C": 20})
    student.register(2016, {"M2": 6}, kind="master")
    assert reasons(student) == ["insufficient_learning_credit"]


def test_degree_year_counts_as_enrolment() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60})
    student.degree(2017, "bachelor")
    decision = student.register(2019, {"C": 6})
    rebuilt = [e.academic_year for e in decision.events[0].entries if e.kind == "rebuilt"]
    assert rebuilt == [2018]


# --- R5 deregistration ----------------------------------------------------------------------


def test_unit_with_a_result_stays_registered_and_refunds_nothing() -> None:
    student = Student()
    student.register(2016, {"A": 6, "B": 6}, starts_on=date(2016, 9, 26))
    student.result(2016, "A", "failed")
    decision = student.deregister(2016, ["A", "B"], date(2016, 9, 30))
    assert [(e.course_unit_code, e.amount) for e in decision.events[0].entries] == [("B", 24)]
    assert not student.account.units[(2016, "A")].deregistered


def test_border_date_of_a_first_term_unit_is_28_days() -> None:
    unit = UnitRegistration("A", 24, starts_on=date(2016, 9, 26), first_term_of_first_track=True)
    assert unit.effective_border_date() == date(2016, 10, 24)


def test_explicit_border_date_wins() -> None:
    unit = UnitRegistration("A", 24, starts_on=date(2016, 9, 26), border_date=date(2017, 2, 20))
    assert unit.effective_border_date() == date(2017, 2, 20)


def test_explicit_generation_flag_on_the_deregistration_wins() -> None:
    student = Student()
    student.register(2016, {"A": 6}, generation_student=True)
    decision = student.deregister(
        2016,
        ["A"],
        date(2016, 11, 28),
        reason="programme_change",
        reenrolled_on=date(2016, 11, 29),
        generation_student=False,
    )
    assert decision.events == ()


def test_generation_flag_on_the_registration_is_used() -> None:
    student = Student()
    student.register(2015, {"OLD": 6})
    student.register(2016, {"A": 6}, generation_student=True)
    student.deregister(
        2016, ["A"], date(2016, 11, 28), reason="programme_change", reenrolled_on=date(2016, 11, 29)
    )
    assert student.balance == 140 - 12 + 6


def test_withdrawal_of_a_generation_student_follows_the_border_date() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    decision = student.deregister(2016, ["A"], date(2016, 11, 20))
    assert decision.events == ()


def test_credit_contract_unit_follows_the_border_date_even_for_a_generation_student() -> None:
    student = Student()
    student.register(2016, {"D": 6})
    student.register(2016, {"A": 6}, contract="credit")
    decision = student.deregister(
        2016, ["A"], date(2016, 11, 20), reason="programme_change", reenrolled_on=date(2016, 11, 21)
    )
    assert decision.events == ()


def test_half_refund_of_half_credits_is_exact() -> None:
    student = Student()
    student.register(2016, {"A": 2.5})
    student.deregister(
        2016, ["A"], date(2016, 12, 1), reason="programme_change", reenrolled_on=date(2016, 12, 1)
    )
    assert student.balance == 140 - 2.5 + 1.25


def test_deregistration_with_an_unregistered_unit_is_refused_whole() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.deregister(2016, ["A", "Z"], date(2016, 9, 30))
    assert reasons(student) == ["not_registered"]
    assert not student.account.units[(2016, "A")].deregistered
    assert student.balance == 134


def test_deregistration_before_its_registration_is_refused() -> None:
    student = Student()
    student.deregister(2016, ["A"], date(2016, 9, 30))
    assert reasons(student) == ["not_registered"]


def test_deregistering_twice_is_refused() -> None:
    student = Student()
    student.register(2016, {"A": 6})
    student.deregister(2016, ["A"], date(2016, 9, 30))
    student.deregister(2016, ["A"], date(2016, 9, 30))
    assert reasons(student) == ["not_registered"]
    assert student.balance == 140


def test_deregistration_outside_the_account_changes_nothing() -> None:
    student = Student()
    student.register(2016, {"A": 6}, contract="exam")
    assert student.deregister(2016, ["A"], date(2016, 9, 30)).events == ()
    assert student.account.units[(2016, "A")].deregistered


@pytest.mark.parametrize(
    ("deregistered_on", "reenrolled_on", "generation", "reason", "refunded"),
    [
        (date(2016, 10, 1), date(2017, 3, 20), True, "programme_change", 24),  # before border
        (date(2016, 11, 30), date(2016, 11, 30), True, "programme_change", 24),
        (date(2016, 12, 1), date(2016, 12, 1), True, "programme_change", 12),
        (date(2017, 3, 15), date(2017, 3, 15), True, "programme_change", 12),
        (date(2017, 3, 16), date(2017, 3, 16), True, "programme_change", 0),
        (date(2016, 11, 20), None, True, "withdrawal", 0),
        (date(2016, 10, 9), None, False, "withdrawal", 24),
        (date(2016, 11, 20), date(2016, 11, 21), False, "programme_change", 0),
    ],
)
def test_refund_rule_table(
    deregistered_on: date,
    reenrolled_on: date | None,
    generation: bool,
    reason: str,
    refunded: int,
) -> None:
    from learning_account.domain.model import (
        Contract,
        CourseUnit,
        Deregister,
        DeregistrationReason,
        EventRef,
    )

    unit = CourseUnit(24, Contract.DIPLOMA, True, border_date=date(2016, 10, 10))
    command = Deregister(
        EventRef("s", "i", "t"),
        "r1",
        2016,
        ("A",),
        deregistered_on,
        DeregistrationReason(reason),
        reenrolled_on,
    )
    assert deregistration_refund(unit, command, generation_student=generation) == refunded


# --- R6 rebuild -----------------------------------------------------------------------------


def test_rebuild_from_minus_15_reaches_60_in_steps() -> None:
    entries = rebuild_entries(-60, 2016, 2030)
    assert [e.amount / 4 for e in entries] == [10, 10, 10, 10, 10, 10, 10, 5]
    assert [e.academic_year for e in entries] == list(range(2017, 2025))


def test_refused_event_still_triggers_the_rebuild() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 30})  # -10
    decision = student.deregister(2019, ["Z"], date(2019, 10, 1))
    assert [type(e).__name__ for e in decision.events] == ["BalanceChanged", "EventRejected"]
    assert [e.amount / 4 for e in decision.events[0].entries] == [10, 10]
    assert student.balance == 10


def test_a_year_is_rebuilt_at_most_once() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 30})
    student.deregister(2019, ["Z"], date(2019, 10, 1))
    decision = student.deregister(2019, ["Z"], date(2019, 10, 1))
    assert [type(e).__name__ for e in decision.events] == ["EventRejected"]


def test_nothing_is_rebuilt_at_60_or_more() -> None:
    student = Student()
    student.register(2016, {"A": 80})
    decision = student.register(2020, {"B": 6})
    assert [e.kind for e in decision.events[0].entries] == ["invested"]
    assert student.account.last_rebuilt_year == 2019


def test_read_model_projects_completed_years_without_enrolment() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 10})
    view = account_view(student.account, current_year=2019)
    assert view.balance / 4 == 30
    rows = student.statement_table(current_year=2019)
    assert rows[-2:] == [
        (2017, 10, 0, 0, 0, 0, 0, 10, 20, True),
        (2018, 20, 0, 0, 0, 0, 0, 10, 30, True),
    ]


# --- R7 announcements -----------------------------------------------------------------------


def test_exhaustion_is_judged_from_the_opening_for_the_first_change() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 20})
    assert student.last_events(CreditExhausted)
    assert [e.threshold for e in student.last_events(CreditLow)] == [240]


def test_exhaustion_is_announced_only_when_crossing_zero() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 60, "C": 30})
    student.register(2016, {"D": 6}, exceptional_admission=True)
    assert student.last_events(CreditExhausted) == []


def test_each_low_balance_threshold_crossed_is_announced_once() -> None:
    student = Student(policy=Policy(low_balance_thresholds=(240, 120)))
    decision = student.register(2016, {"A": 60, "B": 60})
    assert [e.threshold / 4 for e in decision.events if isinstance(e, CreditLow)] == [60, 30]
    student.register(2016, {"C": 6})
    assert student.last_events(CreditLow) == []


def test_low_balance_is_not_announced_when_rising() -> None:
    student = Student()
    student.register(2016, {"A": 60, "B": 30})
    student.result(2016, "A")
    assert student.last_events(CreditLow) == []


def test_package_of_ten_units_is_one_event() -> None:
    student = Student()
    decision = student.register(2016, units("U", 10, 6))
    assert len(decision.events) == 1
