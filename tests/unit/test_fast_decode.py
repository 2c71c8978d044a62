"""The fast reader (`wire.fast`) and the models give every record the same verdict: the same
command and content digest for a valid input, the same reason and error code for a bad one."""

from __future__ import annotations

import copy
import json
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learning_account.wire import EXAM_RESULTS_TOPIC, TYPE_TOPIC, decode
from learning_account_dev import events as ev
from support.decoders import Tally, checked_reader, decoding, reference_decode, verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's bench/
from bench.load import generate_load

STUDENT = "r0123456"
NOW = time.time()


def test_the_bench_load_reads_alike_and_all_of_it_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    tally = Tally()
    monkeypatch.setattr(decoding, "read_input", checked_reader(tally))
    load = generate_load(700)
    assert len(load.records) >= 10_000
    for topic, key, value in load.records:
        assert verdict(decode, topic, value, key, stamped_at=NOW) == verdict(
            reference_decode, topic, value, key, stamped_at=NOW
        )
    assert tally.fast == len(load.records) and not tally.models_only


_RESULT = ev.to_bytes(ev.exam_result(STUDENT, 2016, "PSY101"))
_OTHER_DATA = b'"data": {"student_id": "r0123456"}'


@pytest.mark.parametrize(
    "message",
    [
        _RESULT[:-1] + b", " + _OTHER_DATA + b"}",
        _RESULT[:-1] + b', "subject": "other"}',
        _RESULT[:-1] + b', "type": "be.flanders.learning-account.degree-awarded.v1"}',
        _RESULT.replace(b'"student_id":', b'"student_id": "zz", "student_id":'),
        _RESULT.replace(b'"course_unit_code"', b'"course_\\u0075nit_code"'),
        _RESULT[:-1] + b', "x": "\\q"}',
        _RESULT[:-1] + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        _RESULT[:-1] + b', "x": ' + b"[" * 250 + b"]" * 250 + b"}",
        _RESULT[:-1] + b', "x": ' + b'{"a": ' * 250 + b"1" + b"}" * 250 + b"}",
        _RESULT[:-1] + b', "x": [' + b"{}, " * 200 + b"1]}",
        _RESULT[:-1] + b', "x": 1e999999}',
        _RESULT[:-1] + b', "x": ' + b"9" * 5000 + b"}",
        _RESULT[:-1] + b', "x": NaN}',
        _RESULT[:-1] + b', "x": [-Infinity, 01, 1.]}',
        _RESULT[:-1] + b', "x": "\\ud800"}',
        _RESULT[:-1] + b', "x": "a\x01b"}',
        _RESULT.replace(b"PSY101", b"PSY\x01101"),
        "\ufeff".encode() + _RESULT,
        b" \n" + _RESULT + b" \t",
        _RESULT + b" x",
    ],
    ids=[
        "duplicate-data",
        "duplicate-subject",
        "duplicate-type",
        "duplicate-student-id",
        "escaped-key",
        "bad-escape-in-unknown-field",
        "deep-unknown-field",
        "250-lists-deep-unknown-field",
        "250-objects-deep-unknown-field",
        "many-objects-in-unknown-field",
        "huge-number-in-unknown-field",
        "long-integer-in-unknown-field",
        "nan-in-unknown-field",
        "bad-numbers-in-unknown-field",
        "lone-surrogate-in-unknown-field",
        "control-character-in-unknown-field",
        "control-character-in-code",
        "byte-order-mark",
        "whitespace-around",
        "trailing-text",
    ],
)
def test_odd_json_gets_the_same_verdict_from_both(message: bytes) -> None:
    assert verdict(decode, EXAM_RESULTS_TOPIC, message, stamped_at=NOW) == verdict(
        reference_decode, EXAM_RESULTS_TOPIC, message, stamped_at=NOW
    )


def _events() -> list[dict[str, Any]]:
    return [
        ev.registration(STUDENT, 2016, {"PSY101": 6, "PSY102": 4.5}, generation_student=True),
        ev.exam_result(STUDENT, 2016, "PSY101", "failed"),
        ev.exam_result_correction(STUDENT, 2016, "PSY101", "passed"),
        ev.credits_restoration(STUDENT, 2016, ["PSY101", "PSY102"]),
        ev.degree(STUDENT, 2018, "bachelor"),
        ev.deregistration(
            STUDENT,
            2016,
            ["PSY102"],
            date(2016, 10, 3),
            reason="programme_change",
            reenrolled_on=date(2016, 10, 5),
        ),
    ]


EVENTS = _events()

#: Values close to the valid ones, and the JSON types they are not.
_TEXTS = st.sampled_from(
    [
        "",
        "r0123456",
        "r0123456\n",
        "r01 23456",
        "r0123456é",
        "x" * 65,
        "x" * 257,
        "2016-2017",
        "2016-2018",
        "2016-2017\n",
        "２016-2017",  # a full-width digit is no digit here
        "2007-2008",
        "2099-2100",
        "2016-09-20",
        "2016-02-30",
        "2016-09-20T09:12:00Z",
        "2016-09-20T09:12:00",
        "2016-09-20 09:12:00+01:00",
        "2016-09-20T09:12:00.1234567z",
        "2016-09-20T24:00:00Z",
        "2016-09-20T09:12:60Z",
        "20160920",
        "1.0",
        "passed",
        "PASSED",
        "withdrawal",
        "programme_change",
        "bachelor",
        "diploma",
        "PSY101",
        "PSY102",
    ]
)
_VALUES = st.one_of(
    _TEXTS,
    st.text(max_size=12),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.5, 2.5, 6, 6.0, 60, 60.5, 0.25, 1e400, -6]),
    st.lists(_TEXTS, max_size=3),
    st.dictionaries(_TEXTS, _TEXTS, max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for name, value in node.items():
            found += _paths(value, (*prefix, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    event = copy.deepcopy(draw(st.sampled_from(EVENTS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(event)))
        *parents, last = path
        node = event
        for step in parents:
            node = node[step]
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "set":
            node[last] = draw(_VALUES)
        elif action == "delete":
            del node[last]
        elif isinstance(node, dict):
            node[draw(_TEXTS)] = draw(_VALUES)
    return json.dumps(event, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_mutated(), topic=st.sampled_from(sorted(set(TYPE_TOPIC.values()))))
def test_mutated_records_get_the_same_verdict_from_both(message: bytes, topic: str) -> None:
    assert verdict(decode, topic, message, STUDENT.encode(), stamped_at=NOW) == verdict(
        reference_decode, topic, message, STUDENT.encode(), stamped_at=NOW
    )


_CLOCK = st.builds(
    "{:02d}:{:02d}{}{}".format,
    st.integers(0, 25),
    st.integers(0, 61),
    st.sampled_from(["", ":00", ":59", ":60", ":7"]),
    st.sampled_from(["", ".", ".5", ",5", ".123456", ".1234567", ".123456789123"]),
)
_TIME_PARTS = st.tuples(
    st.sampled_from(["2016-09-20", "2016-02-29", "2015-02-29", "0001-01-01", "2016-9-20"]),
    st.sampled_from(["T", "t", " ", "_", ""]),
    st.one_of(_CLOCK, st.from_regex(r"\A[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?([.,][0-9]{0,10})?\Z")),
    st.one_of(
        st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+01:00", "+0100", "+01", "+23:59"]),
        st.from_regex(r"\A[+-][0-9]{2}(:?[0-9]{2})?\Z"),
    ),
)


@settings(max_examples=500, deadline=None)
@given(parts=_TIME_PARTS)
def test_event_times_get_the_same_verdict_from_both(parts: tuple[str, ...]) -> None:
    event = dict(EVENTS[1], time="".join(parts))
    message = json.dumps(event).encode()
    topic = TYPE_TOPIC[event["type"]]
    assert verdict(decode, topic, message, stamped_at=NOW) == verdict(
        reference_decode, topic, message, stamped_at=NOW
    )
