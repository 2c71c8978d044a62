"""The kinds of the rules core (its enumerations) and `immutable`, the decorator of its value
classes; `model` and `events` re-export them.

A module of its own, never compiled: the optional mypyc build (setup.py) compiles the modules
that use them, and mypyc compiles only the `TYPE_CHECKING` side of a module (it reaches the
run-time `immutable` as unreachable code) and gives a compiled module's enumerations a filler
`__doc__` (which the published schemas would show as their description).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import dataclass_transform

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def immutable(cls: type[Any]) -> type[Any]: ...
else:

    def immutable(cls):
        """An immutable value class. mypy checks it as a frozen dataclass (no field is ever
        assigned after construction). At run time it is a slotted dataclass hashed by value,
        without frozen's per-field `object.__setattr__` in `__init__`: three times faster to
        build, and the hot path builds about a dozen per event."""
        return dataclass(slots=True, unsafe_hash=True)(cls)


class ProgrammeKind(StrEnum):
    BACHELOR = "bachelor"
    MASTER = "master"
    PREPARATORY = "preparatory"
    BACHELOR_AFTER_BACHELOR = "bachelor_after_bachelor"
    MASTER_AFTER_MASTER = "master_after_master"


class Contract(StrEnum):
    DIPLOMA = "diploma"
    CREDIT = "credit"
    EXAM = "exam"


class ResultOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    TOLERATED = "tolerated"


class Degree(StrEnum):
    BACHELOR = "bachelor"
    MASTER = "master"


class DeregistrationReason(StrEnum):
    PROGRAMME_CHANGE = "programme_change"
    WITHDRAWAL = "withdrawal"


class EntryKind(StrEnum):
    OPENED = "opened"
    INVESTED = "invested"
    ACQUIRED = "acquired"
    BONUS = "bonus"
    REFUNDED = "refunded"
    RESTORED = "restored"
    DEGREE_DEDUCTION = "degree_deduction"
    REBUILT = "rebuilt"


class Refusal(StrEnum):
    INSUFFICIENT_LEARNING_CREDIT = "insufficient_learning_credit"
    ALREADY_REGISTERED = "already_registered"
    NOT_REGISTERED = "not_registered"
    RESULT_ALREADY_RECORDED = "result_already_recorded"
    UNKNOWN_REGISTRATION = "unknown_registration"
    NO_RESULT_TO_CORRECT = "no_result_to_correct"
    NOTHING_TO_RESTORE = "nothing_to_restore"
    ID_CONFLICT = "id_conflict"
    """The event's source + id name an applied event with other content (the pipeline's)."""


class ExhaustionOption(StrEnum):
    """What a student whose credit is exhausted can still do (R7.1), in the contract's order."""

    FIRST_MASTER_PROGRAMME = "first_master_programme"
    PREPARATORY_PROGRAMME = "preparatory_programme"
    BACHELOR_AFTER_BACHELOR = "bachelor_after_bachelor"
    MASTER_AFTER_MASTER = "master_after_master"
    EXAMINATION_CONTRACT = "examination_contract"
    EXCEPTIONAL_ADMISSION = "exceptional_admission"
