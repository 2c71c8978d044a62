"""The read API of contracts.md "HTTP API": a student's balance and statement, health, metrics.

Reads only: everything shown comes from the account state in Redis, plus the rebuild years
completed by today (R6.3), which are projected here and not written.

`GET /accounts/{student_id}/view` shows the same account as an HTML page for people; as a browser
cannot send a bearer header from a link, that route alone also takes the token as `?token=`
(access.py decides who reads what).
`GET /asyncapi.json` serves the AsyncAPI document when the app is given one.
`POST /accounts/{student_id}/projection` answers "what if" (projection.py): the same rules on the
stored account plus the given events, writing and publishing nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from learning_account.adapters.clock import current_academic_year, today_in_brussels
from learning_account.domain.events import CreditLow
from learning_account.domain.model import Account, Policy, format_academic_year
from learning_account.domain.numbers import credits_number as amount
from learning_account.domain.rules import DEFAULT_POLICY
from learning_account.domain.statement import StatementRow, account_view, remaining_bonus, statement
from learning_account.entrypoints.access import AccessMiddleware, JwtVerifier
from learning_account.entrypoints.openapi import openapi_document
from learning_account.entrypoints.view import render_account_page, render_error_page
from learning_account.observability.metrics import Metrics
from learning_account.processing.projection import (
    InvalidProjection,
    Outcome,
    Projection,
    project,
    read_events,
    what_if_results,
)
from learning_account.processing.store import AccountStore
from learning_account.wire import (
    CREDIT_EXHAUSTED_TYPE,
    CREDIT_LOW_TYPE,
    STUDENT_ID_PATTERN,
    short_name,
)

log = logging.getLogger(__name__)

_STUDENT_ID = re.compile(STUDENT_ID_PATTERN)
# the page is self-contained: no script, no external asset, inline style only; the token of
# `?token=` must not travel in a Referer header nor stay in a shared cache
_VIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


# 100 events of a few KiB each; a single event over 1 MiB is refused by decode (too_large)
MAX_PROJECTION_BODY_BYTES = 4 * 1024 * 1024


class _NoAccount(Exception):
    pass


class _StoreUnavailable(Exception):
    pass


def create_http_app(
    store: AccountStore,
    *,
    ready: Callable[[], Awaitable[bool]],
    metrics: Metrics,
    token: str | None = None,
    jwt_verifier: JwtVerifier | None = None,
    today: Callable[[], date] = today_in_brussels,
    asyncapi: Callable[[], str] | None = None,
    policy: Policy = DEFAULT_POLICY,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The Starlette app; `today` is the Brussels date the projection (R6.3) is made for.

    `asyncapi`, when given, renders the AsyncAPI document served at /asyncapi.json (once: the
    result is kept for the life of the app). `policy` and `clock` are the consumer's settings
    and time, for what-if answers (projected events count as stamped now). `token` and
    `jwt_verifier` decide who reads what (access.py); with neither, every route is open.
    """

    async def read(student_id: str, *, with_units: bool = False) -> Account | None:
        _check_student_id(student_id)
        try:
            return await store.get(student_id, with_units=with_units)
        except (RedisError, OSError) as error:
            log.warning("reading account %s failed: %r", student_id, error)
            raise _StoreUnavailable from error

    async def load(student_id: str, *, with_units: bool = False) -> Account:
        account = await read(student_id, with_units=with_units)
        if account is None or account.balance is None:
            raise _NoAccount
        return account

    async def get_account(request: Request) -> Response:
        account = await load(request.path_params["student_id"])
        view = account_view(account, current_academic_year(today()))
        return JSONResponse(
            {
                "student_id": view.student_id,
                "balance": amount(view.balance),
                "bonus_granted": amount(view.bonus_granted),
                "exhausted": view.exhausted,
                "master_degree": view.master_degree,
                "as_of_academic_year": format_academic_year(view.as_of_academic_year),
                "remaining_bonus": amount(view.remaining_bonus),
                "rebuild_reserve": amount(view.rebuild_reserve),
            }
        )

    async def get_statement(request: Request) -> Response:
        account = await load(request.path_params["student_id"])
        rows = statement(account, current_academic_year(today()))
        return JSONResponse(
            {"student_id": account.student_id, "years": [_row_json(row) for row in rows]}
        )

    async def post_projection(request: Request) -> Response:
        student_id = request.path_params["student_id"]
        _check_student_id(student_id)
        now = clock()
        try:
            commands = read_events(student_id, await _projection_events(request), now=now)
        except InvalidProjection as error:
            return JSONResponse(
                {"error": error.error, "error_code": error.error_code, "index": error.index},
                status_code=422,
            )
        account = await read(student_id, with_units=True) or Account(student_id)
        projection = project(account, commands, now=now, policy=policy)
        return JSONResponse(_projection_json(projection, current_academic_year(today())))

    async def get_view(request: Request) -> Response:
        try:
            account = await load(request.path_params["student_id"], with_units=True)
        except HTTPException as error:
            return _html_error(error.status_code, str(error.detail))
        except _NoAccount:
            student_id = request.path_params["student_id"]
            return _html_error(404, f"student {student_id} has no learning account")
        except _StoreUnavailable:
            return _html_error(503, "account store unavailable, try again later")
        current_year = current_academic_year(today())
        what_if = what_if_results(
            account, current_year=current_year, today=today(), now=clock(), policy=policy
        )
        page = render_account_page(
            account.student_id,
            account_view(account, current_year),
            statement(account, current_year),
            what_if,
        )
        return HTMLResponse(page, headers=_VIEW_HEADERS)

    asyncapi_document: list[str] = []

    async def get_asyncapi(request: Request) -> Response:
        assert asyncapi is not None
        if not asyncapi_document:
            asyncapi_document.append(asyncapi())
        return Response(asyncapi_document[0], media_type="application/json")

    openapi = openapi_document()

    async def get_openapi(request: Request) -> Response:
        return JSONResponse(openapi)

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def readiness(request: Request) -> Response:
        try:
            is_ready = await ready()
        except Exception as error:  # a failing probe means "not ready", never a 500
            log.warning("readiness check failed: %r", error)
            is_ready = False
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def render_metrics(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def no_account(request: Request, error: Exception) -> Response:
        student_id = request.path_params.get("student_id", "")
        return _error(404, f"student {student_id} has no learning account")

    async def store_unavailable(request: Request, error: Exception) -> Response:
        return _error(503, "account store unavailable, try again later")

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _error(error.status_code, error.detail, error.headers)

    routes = [
        Route("/accounts/{student_id}", get_account, methods=["GET"]),
        Route("/accounts/{student_id}/statement", get_statement, methods=["GET"]),
        Route("/accounts/{student_id}/projection", post_projection, methods=["POST"]),
        Route("/accounts/{student_id}/view", get_view, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", readiness, methods=["GET"]),
        Route("/metrics", render_metrics, methods=["GET"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
    ]
    if asyncapi is not None:
        routes.append(Route("/asyncapi.json", get_asyncapi, methods=["GET"]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            _NoAccount: no_account,
            _StoreUnavailable: store_unavailable,
            HTTPException: http_error,
        },
    )
    if token or jwt_verifier is not None:
        app.add_middleware(
            AccessMiddleware, refuse=_refusal, token=token, jwt_verifier=jwt_verifier
        )
    return app


def _row_json(row: StatementRow) -> dict[str, Any]:
    return {
        "academic_year": format_academic_year(row.academic_year),
        "start": amount(row.start),
        "invested": amount(row.invested),
        "acquired": amount(row.acquired),
        "bonus": amount(row.bonus),
        "refunded": amount(row.refunded),
        "restored": amount(row.restored),
        "degree_deduction": amount(row.degree_deduction),
        "rebuilt": amount(row.rebuilt),
        "balance": amount(row.balance),
        "projected": row.projected,
    }


def _check_student_id(student_id: str) -> None:
    if not _STUDENT_ID.fullmatch(student_id):
        raise HTTPException(400, "student id must be 1-64 characters of A-Z a-z 0-9 . _ -")


async def _projection_events(request: Request) -> Any:
    """The body's `events`, or InvalidProjection (index None) for a body that is not one."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PROJECTION_BODY_BYTES:
            raise InvalidProjection(
                f"body over {MAX_PROJECTION_BODY_BYTES} bytes", "too_large", None
            )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidProjection(f"not UTF-8 (byte {error.start})", "not_utf8", None) from None
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except ValueError as error:
        raise InvalidProjection(f"not JSON: {error}", "not_json", None) from None
    if not isinstance(document, dict) or "events" not in document:
        raise InvalidProjection('body must be {"events": [...]}', "invalid_envelope", None)
    return document["events"]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _projection_json(projection: Projection, current_year: int) -> dict[str, Any]:
    """Read as GET /accounts/{id} and its statement would after the events (no account yet:
    no balance, no rows, the whole bonus still to get)."""
    account = projection.account
    view = None if account.balance is None else account_view(account, current_year)
    return {
        "student_id": account.student_id,
        "balance": None if view is None else amount(view.balance),
        "remaining_bonus": amount(remaining_bonus(account)),
        "rebuild_reserve": None if view is None else amount(view.rebuild_reserve),
        "exhausted": view is not None and view.exhausted,
        "outcomes": [_outcome_json(outcome) for outcome in projection.outcomes],
        "years": (
            [] if view is None else [_row_json(row) for row in statement(account, current_year)]
        ),
    }


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    def credits(quarters: int | None) -> int | float | None:
        return None if quarters is None else amount(quarters)

    announcements: list[dict[str, Any]] = []
    for announcement in outcome.announcements:
        if isinstance(announcement, CreditLow):
            announcements.append(
                {"type": short_name(CREDIT_LOW_TYPE), "threshold": amount(announcement.threshold)}
            )
        else:
            announcements.append({"type": short_name(CREDIT_EXHAUSTED_TYPE)})
    return {
        "index": outcome.index,
        "type": outcome.event_type,
        "accepted": outcome.accepted,
        "held": outcome.held,
        "reason": outcome.reason,
        "previous_balance": credits(outcome.previous_balance),
        "balance": credits(outcome.balance),
        "uncovered_credits": amount(outcome.uncovered_credits),
        "additional_fee": outcome.additional_fee,
        "announcements": announcements,
    }


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _html_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return HTMLResponse(
        render_error_page(status, message),
        status_code=status,
        headers={**_VIEW_HEADERS, **(headers or {})},
    )


def _refusal(status: int, message: str, headers: Mapping[str, str], as_page: bool) -> Response:
    return _html_error(status, message, headers) if as_page else _error(status, message, headers)
