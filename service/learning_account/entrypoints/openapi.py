"""The OpenAPI 3.1 document of the HTTP API (contracts.md "HTTP API"), served at /openapi.json.

The response shapes are pydantic models used only to describe the API; the route handlers in
http_api.py build their JSON directly. tests/unit/test_openapi.py pins the two together: every
route is documented, and a schemathesis run against the live API checks each response against
this document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from learning_account import __version__, wire
from learning_account.processing.projection import MAX_PROJECTED_EVENTS

Amount = float
_AMOUNT = Field(description="Credits, a multiple of 0.25; whole amounts without `.0`")
_REF = "#/components/schemas/{model}"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Account(_Doc):
    student_id: str
    balance: Amount = Field(description="Including the rebuild years completed by today (R6.3)")
    bonus_granted: Amount = _AMOUNT
    exhausted: bool = Field(description="balance <= 0")
    master_degree: bool
    as_of_academic_year: str = Field(pattern=r"^\d{4}-\d{4}$", examples=["2026-2027"])
    remaining_bonus: Amount = Field(
        description="60 - bonus granted; 0 once a rebuilt entry was written (R3.3)"
    )
    rebuild_reserve: Amount = Field(description="60 - balance below 60, else 0")


class StatementRow(_Doc):
    academic_year: str = Field(pattern=r"^\d{4}-\d{4}$")
    start: Amount = _AMOUNT
    invested: Amount = Field(description="Negative or 0")
    acquired: Amount = _AMOUNT
    bonus: Amount = _AMOUNT
    refunded: Amount = _AMOUNT
    restored: Amount = _AMOUNT
    degree_deduction: Amount = _AMOUNT
    rebuilt: Amount = _AMOUNT
    balance: Amount = _AMOUNT
    projected: bool = Field(description="A rebuild year completed by today, not yet written")


class Statement(_Doc):
    student_id: str
    years: list[StatementRow]


class ProjectedEvent(_Doc):
    model_config = ConfigDict(extra="allow")

    type: Literal[wire.INPUT_TYPES]  # type: ignore[valid-type]
    data: dict[str, Any] = Field(description="Exactly as on the input topics")


class ProjectionRequest(_Doc):
    events: list[ProjectedEvent] = Field(min_length=1, max_length=MAX_PROJECTED_EVENTS)


class ExhaustedAnnouncement(_Doc):
    type: Literal["credit-exhausted"]


class LowAnnouncement(_Doc):
    type: Literal["credit-low"]
    threshold: Amount


class ProjectionOutcome(_Doc):
    index: int | None = Field(description="The event's position; null for a stored held result")
    type: str
    accepted: bool
    held: bool
    reason: str | None = Field(description="The rejection reason; null when accepted")
    previous_balance: Amount | None
    balance: Amount | None
    uncovered_credits: Amount
    additional_fee: bool
    announcements: list[ExhaustedAnnouncement | LowAnnouncement]


class Projection(_Doc):
    student_id: str
    balance: Amount | None = Field(description="null while the student still has no account")
    remaining_bonus: Amount
    rebuild_reserve: Amount | None = Field(description="null while there is no account")
    exhausted: bool
    outcomes: list[ProjectionOutcome]
    years: list[StatementRow]


class ProjectionError(_Doc):
    error: str
    error_code: str = Field(description="As on dead letters: invalid_data, unknown_type, ...")
    index: int | None


class Error(_Doc):
    error: str


class Live(_Doc):
    live: bool


class Ready(_Doc):
    ready: bool


_MODELS: tuple[type[BaseModel], ...] = (
    Account,
    Statement,
    ProjectionRequest,
    Projection,
    ProjectionError,
    Error,
    Live,
    Ready,
)


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "The student id is not 1-64 characters of A-Z a-z 0-9 . _ -, or the body is not JSON",
        401: "Missing, expired or badly signed token (when access control is on)",
        403: "A valid token that may not read this account",
        404: "The student has no learning account",
        503: "The account store is unavailable",
    }
    return {str(code): _json(Error, text[code]) for code in codes}


_STUDENT = {
    "name": "student_id",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "pattern": wire.STUDENT_ID_PATTERN,
        "maxLength": wire.MAX_STUDENT_ID_CHARS,
    },
    "example": "mary",
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def openapi_document() -> dict[str, Any]:
    """The document: built from the models above, the same on every call."""
    _, definitions = models_json_schema(
        [(model, "serialization") for model in _MODELS], ref_template=_REF
    )
    account_errors = _errors(400, 401, 403, 404, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "learning-account",
            "version": __version__,
            "description": "Balances, statements and what-if projections of the Flemish "
            "learning account (leerkrediet).",
        },
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "LA_HTTP_TOKEN, or a JWT (a student's `sub`, or the "
                    "`learning-account:read` scope)",
                }
            },
        },
        "paths": {
            "/accounts/{student_id}": {
                "get": {
                    "operationId": "getAccount",
                    "summary": "A student's balance",
                    "parameters": [_STUDENT],
                    "security": _SECURED,
                    "responses": {"200": _json(Account, "The account"), **account_errors},
                }
            },
            "/accounts/{student_id}/statement": {
                "get": {
                    "operationId": "getStatement",
                    "summary": "The statement rows of R1.3, projected rebuild years last",
                    "parameters": [_STUDENT],
                    "security": _SECURED,
                    "responses": {"200": _json(Statement, "The statement"), **account_errors},
                }
            },
            "/accounts/{student_id}/projection": {
                "post": {
                    "operationId": "projectAccount",
                    "summary": "What if: the account after the given events, nothing written",
                    "parameters": [_STUDENT],
                    "security": _SECURED,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": _REF.format(model="ProjectionRequest")}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(Projection, "The projected account and each outcome"),
                        "422": _json(ProjectionError, "An event is invalid"),
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/accounts/{student_id}/view": {
                "get": {
                    "operationId": "viewAccount",
                    "summary": "The statement as a page for people, with what-if balances",
                    "parameters": [
                        _STUDENT,
                        {
                            "name": "token",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "The bearer token, for a link",
                        },
                    ],
                    "security": _SECURED,
                    "responses": {
                        code: {
                            "description": text,
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                        for code, text in (
                            ("200", "The page"),
                            ("400", "Bad student id"),
                            ("401", "Not authenticated"),
                            ("403", "Not allowed"),
                            ("404", "No account"),
                            ("503", "Store unavailable"),
                        )
                    },
                }
            },
            "/health/live": {
                "get": {
                    "operationId": "live",
                    "summary": "Liveness",
                    "responses": {"200": _json(Live, "The process serves")},
                }
            },
            "/health/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Ready only while Kafka and Redis answer and the consumer "
                    "progresses",
                    "responses": {
                        "200": _json(Ready, "Ready"),
                        "503": _json(Ready, "Not ready"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text format",
                    "security": _SECURED,
                    "responses": {
                        "200": {
                            "description": "The metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(401, 403),
                    },
                }
            },
            "/asyncapi.json": {
                "get": {
                    "operationId": "asyncapi",
                    "summary": "The AsyncAPI 3.0 document of the Kafka side",
                    "responses": {
                        "200": {
                            "description": "The document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
