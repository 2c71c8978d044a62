"""Who may read what over HTTP (contracts.md "Access").

`/health/*`, `/openapi.json` and `/asyncapi.json` are open. Every other route needs a bearer
token: the static `LA_HTTP_TOKEN` reads everything (machine clients); a JWT signed by the key of
`LA_HTTP_JWT_PUBLIC_KEY_FILE` or of `LA_HTTP_JWKS_URL` reads the account of its `sub`, or, with
the scope `learning-account:read`, every account and `/metrics`. As a link cannot send a header,
the HTML view alone also takes the token as `?token=`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKSetError, PyJWTError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from learning_account.settings import Settings

log = logging.getLogger(__name__)

READ_ALL_SCOPE = "learning-account:read"
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# one fixed algorithm per key type, so a token cannot pick a weaker or a symmetric one
_ALGORITHMS = {"RS256", "ES256"}
# a JWKS that does not answer must not hold a request (nor a worker thread) for long
_JWKS_TIMEOUT_SECONDS = 5.0

_OPEN_PATHS = frozenset({"/openapi.json", "/asyncapi.json"})
_OPEN_PATH_PREFIX = "/health/"
_VIEW_PATH = re.compile(r"/accounts/[^/]+/view")
_STUDENT_PATH = re.compile(r"/accounts/([^/]+)(?:/statement|/view|/projection)?")

Refuse = Callable[[int, str, Mapping[str, str], bool], Response]
"""(status, message, headers, as_page) → the response refusing a request."""


class InvalidToken(Exception):
    """The token is not one this service accepts (→ 401); the message says why."""


class KeysUnavailable(Exception):
    """The JWKS could not be read, so no token can be checked now (→ 503)."""


def load_public_key(path: Path) -> tuple[PublicKey, str]:
    """The key of a PEM file and the one algorithm it verifies (RS256 or ES256)."""
    key = load_pem_public_key(path.read_bytes())
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("not an RSA or EC P-256 public key")


class JwtVerifier:
    """Checks a JWT's signature, expiry and (when configured) issuer and audience."""

    def __init__(
        self,
        *,
        public_key: tuple[PublicKey, str] | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if (public_key is None) == (jwks_url is None):
            raise ValueError("give a public key or a JWKS URL")
        self._public_key = public_key
        self._jwks = (
            PyJWKClient(jwks_url, timeout=_JWKS_TIMEOUT_SECONDS) if jwks_url is not None else None
        )
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        """None when neither LA_HTTP_JWT_PUBLIC_KEY_FILE nor LA_HTTP_JWKS_URL is set."""
        key_file = settings.http_jwt_public_key_file
        if key_file is None and settings.http_jwks_url is None:
            return None
        return cls(
            public_key=load_public_key(key_file) if key_file is not None else None,
            jwks_url=settings.http_jwks_url,
            issuer=settings.http_jwt_issuer,
            audience=settings.http_jwt_audience,
        )

    async def claims(self, token: str) -> dict[str, Any]:
        key, algorithm = await self._key_for(token)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                # a token without an expiry would never stop working
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except PyJWTError as error:
            raise InvalidToken(str(error)) from None

    async def _key_for(self, token: str) -> tuple[Any, str]:
        if self._jwks is None:
            assert self._public_key is not None
            return self._public_key
        try:
            # PyJWKClient fetches over blocking urllib (its key set cached for 5 minutes)
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except (PyJWKClientConnectionError, PyJWKSetError) as error:
            raise KeysUnavailable(str(error)) from None
        except PyJWTError as error:
            raise InvalidToken(str(error)) from None
        if signing_key.algorithm_name not in _ALGORITHMS:
            raise InvalidToken(f"key algorithm {signing_key.algorithm_name} is not accepted")
        return signing_key.key, signing_key.algorithm_name


def may_read(claims: Mapping[str, Any], path: str) -> bool:
    """The scope reads every route; a `sub` reads (and projects) that student's account only."""
    scope = claims.get("scope")
    scopes = scope.split() if isinstance(scope, str) else scope
    if isinstance(scopes, list) and READ_ALL_SCOPE in scopes:
        return True
    student = _STUDENT_PATH.fullmatch(path)
    subject = claims.get("sub")
    return student is not None and isinstance(subject, str) and student.group(1) == subject


class AccessMiddleware:
    """Lets a request through only with a token that may read its route (see the module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        refuse: Refuse,
        token: str | None = None,
        jwt_verifier: JwtVerifier | None = None,
    ) -> None:
        self.app = app
        self.refuse = refuse
        self.expected = token.encode() if token else None
        self.jwt_verifier = jwt_verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path.startswith(_OPEN_PATH_PREFIX) or path in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        is_view = _VIEW_PATH.fullmatch(path) is not None
        given = [_header_token(scope)]
        if is_view:
            given.append(_query_token(scope))
        tokens = [token for token in given if token is not None]
        # constant time, so the token cannot be guessed byte by byte from response times
        if self.expected is not None and any(
            hmac.compare_digest(token, self.expected) for token in tokens
        ):
            await self.app(scope, receive, send)
            return
        if not tokens or self.jwt_verifier is None:
            message = "missing or wrong bearer token" + (" (or ?token=)" if is_view else "")
            await self._refuse(scope, receive, send, 401, message, "Bearer", is_view)
            return
        try:
            claims = await self.jwt_verifier.claims(tokens[0].decode("latin-1"))
        except InvalidToken as error:
            challenge = 'Bearer error="invalid_token"'
            message = f"invalid bearer token: {error}"
            await self._refuse(scope, receive, send, 401, message, challenge, is_view)
            return
        except KeysUnavailable as error:
            log.warning("JWKS unavailable, bearer tokens cannot be checked: %s", error)
            message = "token keys unavailable, try again later"
            await self._refuse(scope, receive, send, 503, message, None, is_view)
            return
        if not may_read(claims, path):
            challenge = f'Bearer error="insufficient_scope", scope="{READ_ALL_SCOPE}"'
            message = "this token does not give access to this route"
            await self._refuse(scope, receive, send, 403, message, challenge, is_view)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        message: str,
        challenge: str | None,
        as_page: bool,
    ) -> None:
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        await self.refuse(status, message, headers, as_page)(scope, receive, send)


def _header_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                return bytes(credentials.strip())
            return None
    return None


def _query_token(scope: Scope) -> bytes | None:
    query = scope.get("query_string", b"").decode("latin-1")
    given = [value for name, value in parse_qsl(query) if name == "token"]
    # one token, or none: a repeated parameter is ambiguous
    return given[0].encode() if len(given) == 1 else None
