"""Bearer JWTs and the static token against the real HTTP app and a real Redis (contracts.md
"Access"), with keys made here: RSA and EC key files, and a JWKS served on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.entrypoints.access import JwtVerifier, load_public_key
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.metrics import Metrics
from learning_account.settings import Settings
from learning_account_dev import events as ev
from support.apply import apply

ISSUER = "https://idp.example"
AUDIENCE = "learning-account"
READ_ALL = "learning-account:read"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_public_key(path: Path, key: PrivateKey) -> Path:
    path.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def mint(key: PrivateKey, *, kid: str | None = None, **overrides: Any) -> str:
    """A token valid for an hour for ISSUER and AUDIENCE; an override of None drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600}
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid} if kid else None)


def hs256(claims: dict[str, Any], secret: bytes) -> str:
    """Signed by hand: PyJWT refuses to sign with a PEM key as HMAC secret, a forger does not."""
    header, payload = (
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "typ": "JWT"}, claims)
    )
    signature = hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
    return b".".join((header, payload, base64.urlsafe_b64encode(signature).rstrip(b"="))).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def http_client(
    redis_client: Redis, verifier: JwtVerifier | None, token: str | None = None
) -> httpx.AsyncClient:
    app = create_http_app(
        RedisStore(redis_client),
        ready=lambda: _ready(),
        metrics=Metrics(),
        token=token,
        jwt_verifier=verifier,
        today=lambda: date(2019, 10, 1),
        asyncapi=lambda: "{}",
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _ready() -> bool:
    return True


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
async def accounts(redis_client: Redis) -> Redis:
    await apply(redis_client, ev.mary_track("mary") + ev.thomas_track("thomas"))
    return redis_client


@pytest.fixture
async def client(
    accounts: Redis, signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Tokens checked against an RSA key file, with issuer and audience."""
    key_file = write_public_key(tmp_path / "idp.pem", signing_key)
    settings = Settings.from_env(
        {
            "LA_HTTP_JWT_PUBLIC_KEY_FILE": str(key_file),
            "LA_HTTP_JWT_ISSUER": ISSUER,
            "LA_HTTP_JWT_AUDIENCE": AUDIENCE,
        }
    )
    async with http_client(accounts, JwtVerifier.from_settings(settings)) as http:
        yield http


STUDENT_ROUTES = ("/accounts/mary", "/accounts/mary/statement", "/accounts/mary/view")


async def on_student_routes(
    client: httpx.AsyncClient, token: str
) -> list[tuple[str, httpx.Response]]:
    """Each of Mary's routes read with the bearer `token`: (path, response)."""
    return [(path, await client.get(path, headers=bearer(token))) for path in STUDENT_ROUTES]


async def test_a_student_reads_their_own_account(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    token = mint(signing_key, sub="mary")
    for path, response in await on_student_routes(client, token):
        assert response.status_code == 200, path
    assert (await client.get("/accounts/mary")).status_code == 401
    assert (await client.get("/accounts/mary", headers=bearer(token))).json()["balance"] == 200
    # the page also takes the token as ?token= (a link cannot send a header), and only the page
    assert (await client.get("/accounts/mary/view", params={"token": token})).status_code == 200
    assert (await client.get("/accounts/mary", params={"token": token})).status_code == 401


async def test_a_student_may_project_their_own_account_only(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    token = bearer(mint(signing_key, sub="mary"))
    own = await client.post("/accounts/mary/projection", json={"events": []}, headers=token)
    assert own.status_code not in (401, 403)  # through to the route
    other = await client.post("/accounts/thomas/projection", json={"events": []}, headers=token)
    assert other.status_code == 403


async def test_another_students_account_is_forbidden(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    token = mint(signing_key, sub="thomas")
    for path, response in await on_student_routes(client, token):
        assert response.status_code == 403, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    json_refusal = await client.get("/accounts/mary", headers=bearer(token))
    assert set(json_refusal.json()) == {"error"}
    page_refusal = await client.get("/accounts/mary/view", params={"token": token})
    assert page_refusal.status_code == 403
    assert page_refusal.headers["content-type"] == "text/html; charset=utf-8"
    # a student id that only starts like the subject is another student
    assert (await client.get("/accounts/thomas2", headers=bearer(token))).status_code == 403
    assert (await client.get("/metrics", headers=bearer(token))).status_code == 403


async def test_a_token_with_neither_subject_nor_scope_is_forbidden(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey
) -> None:
    for token in (mint(signing_key), mint(signing_key, scope="learning-account:write")):
        assert (await client.get("/accounts/mary", headers=bearer(token))).status_code == 403
        assert (await client.get("/metrics", headers=bearer(token))).status_code == 403


@pytest.mark.parametrize("scope", [READ_ALL, f"openid {READ_ALL} profile", ["openid", READ_ALL]])
async def test_the_read_scope_reads_every_account_and_the_metrics(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey, scope: str | list[str]
) -> None:
    # the scope wins over a subject that is another student
    token = bearer(mint(signing_key, sub="thomas", scope=scope))
    for path in (*STUDENT_ROUTES, "/accounts/thomas", "/metrics"):
        assert (await client.get(path, headers=token)).status_code == 200, path
    assert "la_events_applied_total" in (await client.get("/metrics", headers=token)).text


async def test_bad_tokens_are_unauthorized(
    client: httpx.AsyncClient, signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    now = int(time.time())
    foreign = rsa_key()
    public_pem = (tmp_path / "idp.pem").read_text()
    bad = {
        "expired": mint(signing_key, sub="mary", iat=now - 7200, exp=now - 60),
        "no expiry": mint(signing_key, sub="mary", exp=None),
        "wrong issuer": mint(signing_key, sub="mary", iss="https://other.example"),
        "no issuer": mint(signing_key, sub="mary", iss=None),
        "wrong audience": mint(signing_key, sub="mary", aud="another-service"),
        "foreign key": mint(foreign, sub="mary"),
        # the public key as an HMAC secret: the classic algorithm confusion
        "other algorithm": hs256(
            {"sub": "mary", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}, public_pem.encode()
        ),
        "not a jwt": "s3cret",
    }
    for why, token in bad.items():
        response = await client.get("/accounts/mary", headers=bearer(token))
        assert response.status_code == 401, why
        assert response.headers["www-authenticate"].startswith("Bearer"), why
        assert response.json()["error"].startswith("invalid bearer token"), why
        page = await client.get("/accounts/mary/view", params={"token": token})
        assert page.status_code == 401, why
    missing = await client.get("/accounts/mary")
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    basic = await client.get("/accounts/mary", headers={"Authorization": "Basic bWFyeQ=="})
    assert basic.status_code == 401


async def test_health_and_documents_are_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.get("/asyncapi.json")).status_code == 200
    assert (await client.get("/openapi.json")).status_code not in (401, 403)


async def test_es256_key_file_and_unchecked_issuer_and_audience(
    accounts: Redis, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = JwtVerifier(public_key=load_public_key(write_public_key(tmp_path / "ec.pem", key)))
    async with http_client(accounts, verifier) as client:
        # without LA_HTTP_JWT_ISSUER / _AUDIENCE, whatever the token says is not checked
        token = mint(key, sub="mary", iss="https://anyone.example", aud="anything")
        assert (await client.get("/accounts/mary", headers=bearer(token))).status_code == 200
        assert (await client.get("/accounts/thomas", headers=bearer(token))).status_code == 403
        rsa_signed = mint(rsa_key(), sub="mary")
        assert (await client.get("/accounts/mary", headers=bearer(rsa_signed))).status_code == 401


async def test_the_static_token_still_reads_everything_next_to_jwts(
    accounts: Redis, signing_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    key_file = write_public_key(tmp_path / "idp.pem", signing_key)
    verifier = JwtVerifier(public_key=load_public_key(key_file))
    async with http_client(accounts, verifier, token="s3cret") as client:
        for path in ("/accounts/mary", "/accounts/thomas/statement", "/metrics"):
            assert (await client.get(path, headers=bearer("s3cret"))).status_code == 200, path
        page = await client.get("/accounts/thomas/view", params={"token": "s3cret"})
        assert page.status_code == 200
        student = bearer(mint(signing_key, sub="mary"))
        assert (await client.get("/accounts/mary", headers=student)).status_code == 200
        assert (await client.get("/accounts/thomas", headers=student)).status_code == 403
        assert (await client.get("/accounts/mary", headers=bearer("nope"))).status_code == 401


class _JwksServer:
    """A JWKS endpoint on 127.0.0.1 in a thread, counting the fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        document = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        document = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**document, "kid": kid, "use": "sig"}


@pytest.fixture
def jwks_keys() -> Iterator[tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]]:
    yield rsa_key(), ec.generate_private_key(ec.SECP256R1())


async def test_keys_from_a_jwks_url(
    accounts: Redis, jwks_keys: tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
) -> None:
    rsa_signer, ec_signer = jwks_keys
    with _JwksServer([jwk(rsa_signer, "r1"), jwk(ec_signer, "e1")]) as jwks:
        settings = Settings.from_env(
            {"LA_HTTP_JWKS_URL": jwks.url, "LA_HTTP_JWT_AUDIENCE": AUDIENCE}
        )
        async with http_client(accounts, JwtVerifier.from_settings(settings)) as client:
            for key, kid in ((rsa_signer, "r1"), (ec_signer, "e1")):
                own = bearer(mint(key, kid=kid, sub="mary"))
                assert (await client.get("/accounts/mary", headers=own)).status_code == 200
                assert (await client.get("/accounts/thomas", headers=own)).status_code == 403
            reader = bearer(mint(rsa_signer, kid="r1", scope=READ_ALL))
            assert (await client.get("/metrics", headers=reader)).status_code == 200
            # the key set is fetched once and kept, not once per request
            assert jwks.fetches == 1
            unknown_kid = bearer(mint(rsa_key(), kid="r9", sub="mary"))
            assert (await client.get("/accounts/mary", headers=unknown_kid)).status_code == 401
            wrong_kid = bearer(mint(rsa_key(), kid="r1", sub="mary"))
            assert (await client.get("/accounts/mary", headers=wrong_kid)).status_code == 401
            wrong_audience = bearer(mint(rsa_signer, kid="r1", sub="mary", aud="x"))
            assert (await client.get("/accounts/mary", headers=wrong_audience)).status_code == 401


async def test_an_unreachable_jwks_is_unavailable_not_unauthorized(
    accounts: Redis, jwks_keys: tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
) -> None:
    rsa_signer, _ = jwks_keys
    with _JwksServer([]) as jwks:
        url = jwks.url
    verifier = JwtVerifier(jwks_url=url)
    async with http_client(accounts, verifier) as client:
        token = bearer(mint(rsa_signer, kid="r1", sub="mary"))
        response = await client.get("/accounts/mary", headers=token)
        assert response.status_code == 503
        assert (await client.get("/health/live")).status_code == 200
