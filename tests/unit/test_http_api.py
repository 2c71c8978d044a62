"""The read API against a real Redis, with accounts written by the real pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.metrics import Metrics
from learning_account_dev import events as ev
from support.apply import apply

OCTOBER_2019 = date(2019, 10, 1)


async def always_ready() -> bool:
    return True


async def never_ready() -> bool:
    return False


def client_for(
    store: RedisStore,
    *,
    today: date = OCTOBER_2019,
    ready: Callable[[], Awaitable[bool]] = always_ready,
    token: str | None = None,
    metrics: Metrics | None = None,
) -> httpx.AsyncClient:
    app = create_http_app(
        store, ready=ready, metrics=metrics or Metrics(), token=token, today=lambda: today
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(redis_client: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(RedisStore(redis_client)) as http:
        yield http


async def test_account_of_mary_after_three_years(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    response = await client.get("/accounts/mary")
    assert response.status_code == 200
    assert response.json() == {
        "student_id": "mary",
        "balance": 200,
        "bonus_granted": 60,
        "exhausted": False,
        "master_degree": False,
        "as_of_academic_year": "2019-2020",
        "remaining_bonus": 0,
        "rebuild_reserve": 0,
    }


async def test_statement_of_mary_is_the_seed_table(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    response = await client.get("/accounts/mary/statement")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    zeros = {"refunded": 0, "restored": 0, "degree_deduction": 0, "rebuilt": 0, "projected": False}
    assert response.json() == {
        "student_id": "mary",
        "years": [
            {"academic_year": "2016-2017", "start": 140, "invested": -60, "acquired": 60,
             "bonus": 60, **zeros, "balance": 200},
            {"academic_year": "2017-2018", "start": 200, "invested": -60, "acquired": 60,
             "bonus": 0, **zeros, "balance": 200},
            {"academic_year": "2018-2019", "start": 200, "invested": -60, "acquired": 60,
             "bonus": 0, **zeros, "balance": 200},
        ],
    }  # fmt: skip


async def test_statement_of_thomas_is_the_seed_table(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.thomas_track("thomas"))
    years = (await client.get("/accounts/thomas/statement")).json()["years"]
    table = [(y["start"], y["invested"], y["acquired"], y["bonus"], y["balance"]) for y in years]
    assert table == [
        (140, -60, 36, 36, 152),
        (152, -63, 42, 24, 155),
        (155, -60, 45, 0, 140),
        (140, -57, 57, 0, 140),
    ]


async def test_fractional_amounts_are_json_numbers_without_trailing_zero(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, [ev.registration("frac", 2019, {"HALF": 2.5, "WHOLE": 3})])
    account = (await client.get("/accounts/frac")).json()
    assert account["balance"] == 134.5
    row = (await client.get("/accounts/frac/statement")).json()["years"][0]
    assert row["invested"] == -5.5
    assert row["start"] == 140 and isinstance(row["start"], int)


async def test_unknown_student_is_404_with_a_json_error(client: httpx.AsyncClient) -> None:
    for path in ("/accounts/nobody", "/accounts/nobody/statement"):
        response = await client.get(path)
        assert response.status_code == 404
        assert "error" in response.json()


async def test_student_known_only_by_a_degree_has_no_account(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, [ev.degree("grad", 2016, "master")])
    assert (await client.get("/accounts/grad")).status_code == 404
    assert (await client.get("/accounts/grad/statement")).status_code == 404


@pytest.mark.parametrize("student_id", ["bad%20id", "a%2Bb", "x" * 65, "%C3%A9"])
async def test_invalid_student_id_is_400(client: httpx.AsyncClient, student_id: str) -> None:
    for path in (f"/accounts/{student_id}", f"/accounts/{student_id}/statement"):
        response = await client.get(path)
        assert response.status_code == 400
        assert "error" in response.json()


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/accounts")
    assert response.status_code == 404
    assert "error" in response.json()


async def left_at_30_credits_in_2016(redis_client: Redis) -> None:
    """110 credits invested in 2016-2017, nothing passed, no enrolment since: balance 30."""
    await apply(redis_client, [ev.registration("gap", 2016, ev.package("U", 11, 10))])


async def test_years_completed_without_enrolment_are_projected_in_the_statement(
    redis_client: Redis,
) -> None:
    await left_at_30_credits_in_2016(redis_client)
    async with client_for(RedisStore(redis_client), today=date(2019, 10, 1)) as client:
        years = (await client.get("/accounts/gap/statement")).json()["years"]
    zeros = {
        "invested": 0,
        "acquired": 0,
        "bonus": 0,
        "refunded": 0,
        "restored": 0,
        "degree_deduction": 0,
    }
    assert years == [
        {"academic_year": "2016-2017", "start": 140, "invested": -110, "acquired": 0,
         "bonus": 0, "refunded": 0, "restored": 0, "degree_deduction": 0, "rebuilt": 0,
         "balance": 30, "projected": False},
        {"academic_year": "2017-2018", "start": 30, **zeros, "rebuilt": 10, "balance": 40,
         "projected": True},
        {"academic_year": "2018-2019", "start": 40, **zeros, "rebuilt": 10, "balance": 50,
         "projected": True},
    ]  # fmt: skip


async def test_account_balance_includes_the_projected_years(redis_client: Redis) -> None:
    await left_at_30_credits_in_2016(redis_client)
    async with client_for(RedisStore(redis_client), today=date(2019, 10, 1)) as client:
        account = (await client.get("/accounts/gap")).json()
    assert account["balance"] == 50
    assert account["as_of_academic_year"] == "2019-2020"
    assert (account["remaining_bonus"], account["rebuild_reserve"]) == (60, 10)


async def test_restored_credits_and_what_is_left_to_gain(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(
        redis_client,
        [
            ev.registration("fm", 2018, {"U": 6, "P": 20}),
            ev.exam_result("fm", 2018, "P"),
            ev.credits_restoration("fm", 2018, ["U"]),
            ev.exam_result_correction("fm", 2018, "P", "failed"),
            ev.registration("fm", 2018, {"Q": 10}),
            ev.exam_result("fm", 2018, "Q"),
        ],
    )
    account = (await client.get("/accounts/fm")).json()
    assert (account["balance"], account["bonus_granted"]) == (140 - 36 + 6 + 10 + 10, 10)
    assert (account["remaining_bonus"], account["rebuild_reserve"]) == (50, 0)
    [row] = (await client.get("/accounts/fm/statement")).json()["years"]
    assert (row["invested"], row["acquired"], row["bonus"], row["restored"]) == (-36, 10, 10, 6)


async def test_the_academic_year_turns_on_1_september(redis_client: Redis) -> None:
    await left_at_30_credits_in_2016(redis_client)
    store = RedisStore(redis_client)
    async with client_for(store, today=date(2019, 8, 31)) as client:
        before = (await client.get("/accounts/gap")).json()
    async with client_for(store, today=date(2019, 9, 1)) as client:
        after = (await client.get("/accounts/gap")).json()
    assert (before["balance"], before["as_of_academic_year"]) == (40, "2018-2019")
    assert (after["balance"], after["as_of_academic_year"]) == (50, "2019-2020")


async def test_exhausted_account(redis_client: Redis, client: httpx.AsyncClient) -> None:
    await apply(redis_client, [ev.registration("spent", 2019, ev.package("U", 15, 10))])
    account = (await client.get("/accounts/spent")).json()
    assert (account["balance"], account["exhausted"]) == (-10, True)


async def test_liveness_and_readiness(redis_client: Redis) -> None:
    store = RedisStore(redis_client)
    async with client_for(store) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
    async with client_for(store, ready=never_ready) as client:
        assert (await client.get("/health/live")).status_code == 200
        not_ready = await client.get("/health/ready")
        assert (not_ready.status_code, not_ready.json()) == (503, {"ready": False})


async def test_a_failing_readiness_probe_means_not_ready(redis_client: Redis) -> None:
    async def broken() -> bool:
        raise ConnectionError("kafka is gone")

    async with client_for(RedisStore(redis_client), ready=broken) as client:
        assert (await client.get("/health/ready")).status_code == 503


async def test_redis_down_is_503_json_not_a_stack_trace() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        async with client_for(RedisStore(unreachable)) as client:
            for path in ("/accounts/mary", "/accounts/mary/statement"):
                response = await client.get(path)
                assert response.status_code == 503
                assert set(response.json()) == {"error"}
            assert (await client.get("/health/live")).status_code == 200
    finally:
        await unreachable.aclose()


async def test_token_protects_everything_but_health(redis_client: Redis) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    async with client_for(RedisStore(redis_client), token="s3cret") as client:
        for path in ("/accounts/mary", "/accounts/mary/statement", "/metrics"):
            assert (await client.get(path)).status_code == 401
            wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            basic = await client.get(path, headers={"Authorization": "Basic s3cret"})
            assert basic.status_code == 401
            right = await client.get(path, headers={"Authorization": "Bearer s3cret"})
            assert right.status_code == 200
        unauthorized = await client.get("/accounts/mary")
        assert unauthorized.headers["www-authenticate"] == "Bearer"
        assert "error" in unauthorized.json()
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200


async def test_no_token_configured_means_open(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    assert (await client.get("/accounts/mary")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_metrics_are_prometheus_text_with_every_metric(redis_client: Redis) -> None:
    metrics = Metrics()
    metrics.events_applied.labels(type="registration").inc()
    metrics.consumer_lag.labels(topic="t", partition="0").set(3)
    metrics.redis_seconds.labels(operation="load").observe(0.002)
    async with client_for(RedisStore(redis_client), metrics=metrics) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'la_events_applied_total{type="registration"} 1.0',
        "la_events_rejected_total",
        "la_dead_letters_total",
        "la_duplicates_total",
        "la_outputs_published_total",
        "la_batches_total",
        "la_held_results",
        'la_consumer_lag{partition="0",topic="t"} 3.0',
        "la_ready",
        "la_batch_seconds_bucket",
        "la_event_latency_seconds_bucket",
        'la_redis_seconds_count{operation="load"} 1.0',
    ):
        assert name in text, name


def test_two_metrics_instances_do_not_collide() -> None:
    first, second = Metrics(), Metrics()
    first.batches.inc()
    assert b"la_batches_total 1.0" in first.render()
    assert b"la_batches_total 0.0" in second.render()


# --- POST /accounts/{id}/projection ----------------------------------------------------------


def what_if(*events: dict[str, Any]) -> dict[str, Any]:
    """The request body: each event's type and data, as a client sends them."""
    return {"events": [{"type": event["type"], "data": event["data"]} for event in events]}


async def stored_state(redis_client: Redis) -> dict[bytes, Any]:
    """Every key in Redis with its value (DUMP's field order may change on a mere read)."""
    state: dict[bytes, Any] = {}
    for key in sorted(await redis_client.keys("*")):
        kind = await redis_client.type(key)
        if kind == b"hash":
            state[key] = await redis_client.hgetall(key)
        elif kind == b"zset":
            state[key] = await redis_client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = (kind, await redis_client.get(key))
    return state


async def test_projection_of_mary_s_first_master_and_its_degree(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    units = ev.package("M", 10, 6)
    body = what_if(
        ev.registration("mary", 2019, units, kind="master"),
        *(ev.exam_result("mary", 2019, code) for code in units),
        ev.degree("mary", 2019, "master"),
    )
    response = await client.post("/accounts/mary/projection", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {name: answer[name] for name in answer if name not in ("outcomes", "years")} == {
        "student_id": "mary",
        "balance": 60,
        "remaining_bonus": 0,
        "rebuild_reserve": 0,
        "exhausted": False,
    }
    assert answer["outcomes"][0] == {
        "index": 0,
        "type": ev.registration("x", 2019, {"A": 1})["type"],
        "accepted": True,
        "held": False,
        "reason": None,
        "previous_balance": 200,
        "balance": 140,
        "uncovered_credits": 0,
        "additional_fee": False,
        "announcements": [],
    }
    assert [o["balance"] for o in answer["outcomes"]] == [140 + 6 * i for i in range(11)] + [60]
    assert [o["index"] for o in answer["outcomes"]] == list(range(12))
    last = answer["years"][-1]
    assert (last["academic_year"], last["start"], last["invested"], last["acquired"]) == (
        "2019-2020",
        200,
        -60,
        60,
    )
    assert (last["degree_deduction"], last["balance"]) == (-140, 60)


async def test_projection_writes_nothing(redis_client: Redis, client: httpx.AsyncClient) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    before = await stored_state(redis_client)
    version = await redis_client.hget(account_key("mary"), "v")
    account = (await client.get("/accounts/mary")).json()
    body = what_if(
        ev.registration("mary", 2019, {"M1": 60}, kind="master"),
        ev.exam_result("mary", 2019, "M1", "failed"),
        ev.exam_result("mary", 2020, "LATER"),  # held: would be a new held result
        ev.registration("nobody-else", 2019, {"A": 6}),  # refused as a whole (422)
    )
    assert (await client.post("/accounts/mary/projection", json=body)).status_code == 422
    body["events"].pop()
    response = await client.post("/accounts/mary/projection", json=body)
    assert response.status_code == 200
    assert response.json()["balance"] == 140
    assert await stored_state(redis_client) == before
    assert await redis_client.hget(account_key("mary"), "v") == version
    assert (await client.get("/accounts/mary")).json() == account


async def test_invalid_event_is_422_with_the_dead_letter_code_and_its_index(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    good = ev.registration("mary", 2019, {"A": 6})
    bad_credits = ev.registration("mary", 2019, {"A": 6})
    bad_credits["data"]["course_units"][0]["credits"] = 61
    cases = [
        ([good, bad_credits], "invalid_data", 1),
        ([good, good, {"type": "be.flanders.learning-account.nope.v1", "data": {}}],
         "unknown_type", 2),
        ([ev.exam_result("someone-else", 2019, "A")], "subject_mismatch", 0),
    ]  # fmt: skip
    for events, code, index in cases:
        body = {"events": [{"type": e["type"], "data": e["data"]} for e in events]}
        response = await client.post("/accounts/mary/projection", json=body)
        assert response.status_code == 422, code
        answer = response.json()
        assert set(answer) == {"error", "error_code", "index"}
        assert (answer["error_code"], answer["index"]) == (code, index)
        assert answer["error"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"events": [', "not_json"),
        (b"\xff\xfe", "not_utf8"),
        (b'{"events": []}', "invalid_envelope"),
        (b'{"events": {"type": "x"}}', "invalid_envelope"),
        (b"[]", "invalid_envelope"),
    ],
)
async def test_a_body_that_is_not_a_list_of_events_is_422_without_index(
    client: httpx.AsyncClient, body: bytes, code: str
) -> None:
    response = await client.post("/accounts/mary/projection", content=body)
    assert response.status_code == 422
    assert response.json()["error_code"] == code
    assert response.json()["index"] is None


async def test_projection_for_a_student_without_an_account(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/accounts/newcomer/projection",
        json=what_if(ev.registration("newcomer", 2019, {"A": 6, "B": 6})),
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["balance"], answer["exhausted"], answer["remaining_bonus"]) == (128, False, 60)
    [outcome] = answer["outcomes"]
    assert (outcome["previous_balance"], outcome["balance"]) == (0, 128)
    assert [row["balance"] for row in answer["years"]] == [128]
    assert (await client.get("/accounts/newcomer")).status_code == 404


async def test_projection_that_still_opens_no_account(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/accounts/grad/projection", json=what_if(ev.degree("grad", 2019, "master"))
    )
    assert response.status_code == 200
    answer = response.json()
    assert (answer["balance"], answer["years"], answer["exhausted"]) == (None, [], False)
    [outcome] = answer["outcomes"]
    assert (outcome["accepted"], outcome["previous_balance"], outcome["balance"]) == (
        True,
        None,
        None,
    )


async def test_held_results_and_their_release(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    # B's result arrived before its registration: it is held in the stored account
    await apply(
        redis_client,
        [ev.registration("held", 2019, {"A": 6}), ev.exam_result("held", 2019, "B")],
    )
    body = what_if(
        ev.exam_result("held", 2019, "C"),
        ev.registration("held", 2019, {"B": 6, "C": 6}),
    )
    answer = (await client.post("/accounts/held/projection", json=body)).json()
    steps = [
        (o["index"], o["accepted"], o["held"], o["previous_balance"], o["balance"])
        for o in answer["outcomes"]
    ]
    assert steps == [
        (0, True, True, 134, 134),  # C held: accepted, balance unchanged
        (1, True, False, 134, 122),
        (None, True, False, 122, 134),  # B, held in the stored account, released
        (0, True, False, 134, 146),  # C released, reported again with its own index
    ]
    assert answer["balance"] == 146


async def test_announcements_of_a_projected_step(client: httpx.AsyncClient) -> None:
    body = what_if(ev.registration("spender", 2019, {"A": 60, "B": 60, "C": 24}))
    answer = (await client.post("/accounts/spender/projection", json=body)).json()
    [outcome] = answer["outcomes"]
    assert outcome["announcements"] == [
        {"type": "credit-exhausted"},
        {"type": "credit-low", "threshold": 60},
    ]
    assert (outcome["uncovered_credits"], answer["exhausted"]) == (4, True)
    assert answer["rebuild_reserve"] == 64


async def test_projection_refusal_reason(redis_client: Redis, client: httpx.AsyncClient) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    body = what_if(ev.exam_result("mary", 2016, "Y16-01"))
    [outcome] = (await client.post("/accounts/mary/projection", json=body)).json()["outcomes"]
    assert (outcome["accepted"], outcome["reason"]) == (False, "result_already_recorded")


async def test_projection_takes_the_bearer_token(redis_client: Redis) -> None:
    body = what_if(ev.registration("mary", 2019, {"A": 6}))
    async with client_for(RedisStore(redis_client), token="s3cret") as client:
        assert (await client.post("/accounts/mary/projection", json=body)).status_code == 401
        query = await client.post("/accounts/mary/projection?token=s3cret", json=body)
        assert query.status_code == 401  # ?token= opens the page only
        response = await client.post(
            "/accounts/mary/projection", json=body, headers={"Authorization": "Bearer s3cret"}
        )
        assert response.status_code == 200


async def test_projection_with_a_bad_student_id_or_redis_down(client: httpx.AsyncClient) -> None:
    body = what_if(ev.registration("mary", 2019, {"A": 6}))
    assert (await client.post("/accounts/bad%20id/projection", json=body)).status_code == 400
    assert (await client.get("/accounts/mary/projection")).status_code == 405
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        async with client_for(RedisStore(unreachable)) as down:
            response = await down.post("/accounts/mary/projection", json=body)
        assert (response.status_code, set(response.json())) == (503, {"error"})
    finally:
        await unreachable.aclose()


async def test_projection_of_a_correction_and_a_restoration(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    body = what_if(
        ev.exam_result_correction("mary", 2016, "Y16-01", "failed"),
        ev.credits_restoration("mary", 2016, ["Y16-01"]),  # a pass taken back restores in full
    )
    answer = (await client.post("/accounts/mary/projection", json=body)).json()
    assert [(o["accepted"], o["previous_balance"], o["balance"]) for o in answer["outcomes"]] == [
        (True, 200, 188),
        (True, 188, 194),
    ]
    assert (answer["balance"], answer["remaining_bonus"]) == (194, 6)  # the bonus is free again
    first = answer["years"][0]
    assert (first["acquired"], first["bonus"], first["restored"], first["balance"]) == (
        54,
        54,
        6,
        194,
    )
    assert [row["balance"] for row in answer["years"]] == [194, 194, 194]
    assert (await client.get("/accounts/mary")).json()["balance"] == 200


async def test_the_demo_reads_statements_with_the_static_token(
    redis_client: Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from learning_account.settings import Settings
    from learning_account_dev.commands import print_statement
    from support.http import serving

    await apply(redis_client, ev.mary_track("mary"))
    app = create_http_app(
        RedisStore(Redis.from_url(redis_url)),
        ready=always_ready,
        metrics=Metrics(),
        token="demo-token",
        today=lambda: OCTOBER_2019,
    )
    with serving(app) as url:
        port = int(url.rsplit(":", 1)[1])
        settings = Settings(http_port=port, http_token="demo-token")
        await asyncio.to_thread(print_statement, settings, "mary")
    printed = capsys.readouterr().out
    assert "2018-2019" in printed and "200" in printed
