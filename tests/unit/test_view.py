"""The account page (GET /accounts/{id}/view) over a real Redis filled by the real pipeline.

The page is parsed with html.parser: the seed's numbers must sit in the seed's rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from test_http_api import OCTOBER_2019, always_ready, client_for

from browser.page import AccountPage, parse_account_page
from learning_account.adapters.redis_store import RedisStore
from learning_account.domain.model import OPENING_BALANCE
from learning_account.domain.statement import AccountView, StatementRow
from learning_account.entrypoints.http_api import create_http_app
from learning_account.entrypoints.view import render_account_page
from learning_account.observability.metrics import Metrics
from learning_account.processing.projection import UnitWhatIf, WhatIf
from learning_account_dev import events as ev
from support.apply import apply


@pytest.fixture
async def client(redis_client: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(RedisStore(redis_client)) as http:
        yield http


async def page_of(client: httpx.AsyncClient, student_id: str, **params: str) -> AccountPage:
    response = await client.get(f"/accounts/{student_id}/view", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return parse_account_page(response.text)


async def test_mary_page_is_the_seed_table(redis_client: Redis, client: httpx.AsyncClient) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    page = await page_of(client, "mary")
    assert page.h1 == "Learning account of mary"
    assert page.text_of("balance") == "200"
    assert page.text_of("state") == "available"
    assert page.text_of("bonus-granted") == "60"
    assert page.text_of("master-degree") == "not recorded"
    assert page.text_of("as-of") == "2019-2020"
    assert page.years == ["2016-2017", "2017-2018", "2018-2019"]
    assert page.labels == ["Start", "Credits invested", "Credits acquired", "Bonus", "Balance"]
    assert page.row("Start") == ["140", "200", "200"]
    assert page.row("Credits invested") == ["-60", "-60", "-60"]
    assert page.row("Credits acquired") == ["+60", "+60", "+60"]
    assert page.row("Bonus") == ["+60", "", ""]
    assert page.row("Balance") == ["200", "200", "200"]


async def test_thomas_page_is_the_seed_table(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.thomas_track("thomas"))
    page = await page_of(client, "thomas")
    assert page.text_of("balance") == "140"
    assert page.text_of("bonus-granted") == "60"
    assert page.years == ["2016-2017", "2017-2018", "2018-2019", "2019-2020"]
    assert page.labels == ["Start", "Credits invested", "Credits acquired", "Bonus", "Balance"]
    assert page.row("Start") == ["140", "152", "155", "140"]
    assert page.row("Credits invested") == ["-60", "-63", "-60", "-57"]
    assert page.row("Credits acquired") == ["+36", "+42", "+45", "+57"]
    assert page.row("Bonus") == ["+36", "+24", "", ""]
    assert page.row("Balance") == ["152", "155", "140", "140"]


async def test_chart_has_the_start_and_one_point_per_year(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.thomas_track("thomas"))
    page = await page_of(client, "thomas")
    assert page.svg is not None
    assert page.svg.attrs["viewbox"].startswith("0 0 ")  # html.parser lowercases names
    assert "width" not in page.svg.attrs  # scales with the page, through its viewBox
    points = page.year_points
    assert [(p.attrs["data-year"], p.attrs["data-balance"]) for p in points] == [
        ("2016-2017", "152"),
        ("2017-2018", "155"),
        ("2018-2019", "140"),
        ("2019-2020", "140"),
    ]
    starts = [c for c in page.circles if "start-point" in c.classes]
    assert [s.attrs["data-balance"] for s in starts] == ["140"]
    # left to right, higher balance drawn higher (smaller y)
    xs = [float(c.attrs["cx"]) for c in [*starts, *points]]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    ys = {c.attrs["data-balance"]: float(c.attrs["cy"]) for c in points}
    assert ys["155"] < ys["152"] < ys["140"]
    assert [p.attrs["class"] for p in page.polylines] == ["balance-line"]
    labels = [t.text for t in page.svg_texts]
    assert "60 credits (one year)" in labels
    assert "0" in labels  # the zero line's tick


async def test_projected_years_are_marked_and_dashed(redis_client: Redis) -> None:
    # 110 credits invested in 2016-2017, nothing passed: 30, then two rebuilt years by 2019
    await apply(redis_client, [ev.registration("gap", 2016, ev.package("U", 11, 10))])
    async with client_for(RedisStore(redis_client), today=date(2019, 10, 1)) as client:
        response = await client.get("/accounts/gap/view")
    page = parse_account_page(response.text)
    assert page.text_of("balance") == "50"
    assert page.years == ["2016-2017", "2017-2018*", "2018-2019*"]
    assert page.labels == [
        "Start",
        "Credits invested",
        "Credits acquired",
        "Bonus",
        "Rebuilt",
        "Balance",
    ]
    assert page.row("Rebuilt") == ["", "+10", "+10"]
    assert page.row("Balance") == ["30", "40", "50"]
    assert ["projected" in cell.classes for cell in page.header[1:]] == [False, True, True]
    assert ["projected" in p.classes for p in page.year_points] == [False, True, True]
    assert [p.attrs["class"] for p in page.polylines] == [
        "balance-line",
        "balance-line projected-line",
    ]
    assert "* projected: a year completed without enrolment" in response.text


async def test_exhausted_account_page(redis_client: Redis, client: httpx.AsyncClient) -> None:
    await apply(redis_client, [ev.registration("spent", 2019, ev.package("U", 15, 10))])
    response = await client.get("/accounts/spent/view")
    page = parse_account_page(response.text)
    assert page.text_of("balance") == "-10"
    assert page.text_of("state") == "exhausted"
    assert "exhausted" in page.by_id["state"].classes
    assert page.row("Credits invested") == ["-150"]
    # the chart reaches below zero: the lowest point is under the zero line
    assert float(page.year_points[0].attrs["cy"]) > float(
        next(c for c in page.circles if "start-point" in c.classes).attrs["cy"]
    )


async def test_fractional_amounts_have_no_trailing_zero(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, [ev.registration("frac", 2019, {"HALF": 2.5, "WHOLE": 3})])
    page = await page_of(client, "frac")
    assert page.text_of("balance") == "134.5"
    assert page.row("Credits invested") == ["-5.5"]
    assert page.row("Start") == ["140"]


async def test_page_is_self_contained_and_fit_for_a_phone(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    response = await client.get("/accounts/mary/view")
    page = parse_account_page(response.text)
    assert response.text.startswith("<!DOCTYPE html>")
    assert {"charset": "utf-8"} in page.meta
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.meta
    assert page.scripts == 0
    assert page.external_refs == []
    # the table scrolls sideways in its own box on a phone
    assert ".table-wrap { overflow-x: auto;" in response.text
    assert '<div class="table-wrap">\n<table id="statement">' in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"


def test_student_id_and_every_text_are_escaped() -> None:
    nasty = '<script>alert("x")</script>&\'"'
    view = AccountView(nasty, 200 * 4, 60 * 4, True, 2019)
    rows = [StatementRow(2016, OPENING_BALANCE, -240, 240, 240, 0, 0, 0, 200 * 4)]
    document = render_account_page(nasty, view, rows)
    assert "<script>" not in document
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in document
    page = parse_account_page(document)
    assert page.scripts == 0
    assert page.h1 == f"Learning account of {nasty}"
    assert page.title == f"Learning account of {nasty}"
    assert page.text_of("master-degree") == "recorded"


async def test_route_refuses_a_bad_student_id(client: httpx.AsyncClient) -> None:
    # the route's own validation: such an id never reaches the page
    for student_id in ("%3Cscript%3E", "bad%20id", "x" * 65):
        response = await client.get(f"/accounts/{student_id}/view")
        assert response.status_code == 400
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "<script>" not in response.text


async def test_unknown_student_is_a_404_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/accounts/nobody/view")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "student nobody has no learning account" in response.text


async def test_redis_down_is_a_503_page() -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    try:
        async with client_for(RedisStore(unreachable)) as client:
            response = await client.get("/accounts/mary/view")
        assert response.status_code == 503
        assert response.headers["content-type"] == "text/html; charset=utf-8"
    finally:
        await unreachable.aclose()


async def test_token_in_the_query_opens_the_view_only(redis_client: Redis) -> None:
    await apply(redis_client, ev.mary_track("mary"))
    async with client_for(RedisStore(redis_client), token="s3cret") as client:
        assert (await client.get("/accounts/mary/view")).status_code == 401
        wrong = await client.get("/accounts/mary/view", params={"token": "nope"})
        assert wrong.status_code == 401
        assert wrong.headers["content-type"] == "text/html; charset=utf-8"
        twice = await client.get("/accounts/mary/view?token=s3cret&token=s3cret")
        assert twice.status_code == 401
        page = await page_of(client, "mary", token="s3cret")
        assert page.text_of("balance") == "200"
        header = await client.get("/accounts/mary/view", headers={"Authorization": "Bearer s3cret"})
        assert header.status_code == 200
        for path in ("/accounts/mary", "/accounts/mary/statement", "/metrics"):
            response = await client.get(path, params={"token": "s3cret"})
            assert response.status_code == 401, path
            assert "error" in response.json()
        # a path that only looks like the view is no way around the header
        lookalike = await client.get("/accounts/mary/view/x", params={"token": "s3cret"})
        assert lookalike.status_code == 401


async def test_asyncapi_is_served_once_rendered(redis_client: Redis) -> None:
    calls: list[int] = []

    def render() -> str:
        calls.append(1)
        return json.dumps({"asyncapi": "3.0.0", "info": {"title": "learning-account"}})

    app = create_http_app(
        RedisStore(redis_client),
        ready=always_ready,
        metrics=Metrics(),
        today=lambda: OCTOBER_2019,
        asyncapi=render,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for _ in range(2):
            response = await client.get("/asyncapi.json")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.json()["asyncapi"] == "3.0.0"
    assert len(calls) == 1


async def test_no_asyncapi_route_unless_configured(client: httpx.AsyncClient) -> None:
    assert (await client.get("/asyncapi.json")).status_code == 404


# --- what if: the latest year's units without a result ---------------------------------------

STRICT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def in_progress(student_id: str) -> list[dict[str, Any]]:
    """Passed a year, then registered 2019-2020: A passed, B and C still without a result."""
    return [
        ev.registration(student_id, 2018, {"OLD": 6}),
        ev.exam_result(student_id, 2018, "OLD", "failed"),
        ev.registration(student_id, 2019, {"A": 6, "B": 2.5, "C": 6, "GONE": 6}),
        ev.exam_result(student_id, 2019, "A"),
        ev.deregistration(student_id, 2019, ["GONE"], date(2019, 10, 1)),  # refunded: +6
        # later in the year, but under an examination contract: not a year that uses the account
        ev.registration(student_id, 2020, {"EXAM": 6}, contract="exam"),
    ]


async def test_what_if_shows_each_unit_without_a_result_passed_and_failed(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, in_progress("ines"))
    response = await client.get("/accounts/ines/view")
    page = parse_account_page(response.text)
    balance = 140 - 6 - 20.5 + 6 + 6 + 6  # 131.5
    assert page.text_of("balance") == "131.5"
    assert page.text_of("what-if-title") == "What if: course units of 2019-2020 without a result"
    # a pass returns the credits and the same again as bonus (first 60 diploma credits)
    assert page.table("what-if") == [
        ["Unit", "Credits", "If passed", "If failed"],
        ["B", "2.5", f"{balance + 5:g}", f"{balance:g}"],
        ["C", "6", f"{balance + 12:g}", f"{balance:g}"],
    ]
    assert page.scripts == 0
    assert response.headers["content-security-policy"] == STRICT_CSP


async def test_what_if_balances_are_those_of_the_projection(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(redis_client, in_progress("same"))
    page = await page_of(client, "same")
    for code, _credits, if_passed, if_failed in page.table("what-if")[1:]:
        for outcome, shown in (("passed", if_passed), ("failed", if_failed)):
            result = ev.exam_result("same", 2019, code, outcome)
            body = {"events": [{"type": result["type"], "data": result["data"]}]}
            answer = (await client.post("/accounts/same/projection", json=body)).json()
            assert f"{answer['balance']:g}" == shown, (code, outcome)


async def test_no_what_if_when_every_unit_of_the_latest_year_has_a_result(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    # 2018-2019 still has a unit without a result, but the latest year is 2019-2020
    await apply(
        redis_client,
        [
            ev.registration("done", 2018, {"OPEN": 6}),
            ev.registration("done", 2019, {"A": 6}),
            ev.exam_result("done", 2019, "A"),
        ],
    )
    response = await client.get("/accounts/done/view")
    page = parse_account_page(response.text)
    assert "what-if" not in page.tables
    assert "what-if-title" not in page.by_id
    assert list(page.tables) == ["statement"]


def test_what_if_unit_codes_are_escaped() -> None:
    nasty = '<script>alert("x")</script>"'
    view = AccountView("s", 100 * 4, 0, False, 2019)
    rows = [StatementRow(2019, OPENING_BALANCE, -160, 0, 0, 0, 0, 0, 100 * 4)]
    what_if = WhatIf(2019, (UnitWhatIf(nasty, 24, 112 * 4, 100 * 4),))
    document = render_account_page("s", view, rows, what_if)
    assert "<script>" not in document
    page = parse_account_page(document)
    assert page.scripts == 0
    assert page.table("what-if")[1] == [nasty, "6", "112", "100"]


async def test_what_if_leaves_out_a_restored_unit(
    redis_client: Redis, client: httpx.AsyncClient
) -> None:
    await apply(
        redis_client,
        [
            ev.registration("closed", 2019, {"U": 6, "V": 6}),
            ev.credits_restoration("closed", 2019, ["U"]),
        ],
    )
    page = await page_of(client, "closed")
    assert page.text_of("balance") == "134"
    assert page.table("what-if") == [
        ["Unit", "Credits", "If passed", "If failed"],
        ["V", "6", "146", "134"],
    ]
