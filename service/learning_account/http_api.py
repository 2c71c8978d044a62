"""The read API of contracts.md "HTTP API": a student's balance and statement, health, metrics.

Reads only: everything shown comes from the account state in Redis, plus the rebuild years
completed by today (R6.3), which are projected here and not written.

`GET /accounts/{student_id}/view` shows the same account as an HTML page for people; as a browser
cannot send a bearer header from a link, that route alone also takes the token as `?token=`
(access.py decides who reads what).
`GET /asyncapi.json` serves the AsyncAPI document when the app is given one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .access import AccessMiddleware, JwtVerifier
from .clock import current_academic_year, today_in_brussels
from .domain.model import Account, format_academic_year
from .domain.statement import StatementRow, account_view, statement
from .metrics import Metrics
from .outputs import amount
from .store import AccountStore
from .view import render_account_page, render_error_page
from .wire import _STUDENT_ID_PATTERN

log = logging.getLogger(__name__)

_STUDENT_ID = re.compile(_STUDENT_ID_PATTERN)
# the page is self-contained: no script, no external asset, inline style only; the token of
# `?token=` must not travel in a Referer header nor stay in a shared cache
_VIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


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
) -> Starlette:
    """The Starlette app; `today` is the Brussels date the projection (R6.3) is made for.

    `asyncapi`, when given, renders the AsyncAPI document served at /asyncapi.json (once: the
    result is kept for the life of the app). `token` and `jwt_verifier` decide who reads what
    (access.py); with neither, every route is open.
    """

    async def load(student_id: str) -> Account:
        if not _STUDENT_ID.fullmatch(student_id):
            raise HTTPException(400, "student id must be 1-64 characters of A-Z a-z 0-9 . _ -")
        try:
            account = await store.get(student_id)
        except (RedisError, OSError) as error:
            log.warning("reading account %s failed: %r", student_id, error)
            raise _StoreUnavailable from error
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
            }
        )

    async def get_statement(request: Request) -> Response:
        account = await load(request.path_params["student_id"])
        rows = statement(account, current_academic_year(today()))
        return JSONResponse(
            {"student_id": account.student_id, "years": [_row_json(row) for row in rows]}
        )

    async def get_view(request: Request) -> Response:
        try:
            account = await load(request.path_params["student_id"])
        except HTTPException as error:
            return _html_error(error.status_code, str(error.detail))
        except _NoAccount:
            student_id = request.path_params["student_id"]
            return _html_error(404, f"student {student_id} has no learning account")
        except _StoreUnavailable:
            return _html_error(503, "account store unavailable, try again later")
        current_year = current_academic_year(today())
        page = render_account_page(
            account.student_id,
            account_view(account, current_year),
            statement(account, current_year),
        )
        return HTMLResponse(page, headers=_VIEW_HEADERS)

    asyncapi_document: list[str] = []

    async def get_asyncapi(request: Request) -> Response:
        assert asyncapi is not None
        if not asyncapi_document:
            asyncapi_document.append(asyncapi())
        return Response(asyncapi_document[0], media_type="application/json")

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
        Route("/accounts/{student_id}/view", get_view, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", readiness, methods=["GET"]),
        Route("/metrics", render_metrics, methods=["GET"]),
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
        "degree_deduction": amount(row.degree_deduction),
        "rebuilt": amount(row.rebuilt),
        "balance": amount(row.balance),
        "projected": row.projected,
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
