"""The settings model: every LA_* name with its default, each bound and choice, secrets hidden."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from learning_account.settings import Settings, SettingsError, reveal
from support.settings import from_env


def refusal(**env: str) -> str:
    with pytest.raises(SettingsError) as raised:
        from_env(**env)
    return str(raised.value)


def test_defaults_are_the_documented_ones() -> None:
    settings = from_env()
    assert settings == Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_cluster == "auto"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.consumer_group == "learning-account"
    assert settings.low_balance_thresholds == (240,)  # 60 credits in quarters
    assert settings.result_hold_seconds == 604800
    assert (settings.batch_max_records, settings.batch_timeout_ms) == (2000, 50)
    assert settings.fetch_max_wait_ms == 20
    assert settings.outbox_retention_seconds == 604800
    assert settings.held_sweep_interval_seconds == 5
    assert settings.gc_threshold == (100_000, 50, 100)
    assert settings.graceful_timeout_seconds == 30
    assert (settings.log_level, settings.tracing) == ("INFO", "off")
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_sasl_mechanism is None and settings.kafka_sasl_password is None
    assert settings.http_token is None and settings.http_jwks_url is None
    assert settings.http_jwt_public_key_file is None
    assert settings.http_jwt_issuer is None and settings.http_jwt_audience is None


def test_each_variable_sets_its_field() -> None:
    settings = from_env(
        KAFKA_BOOTSTRAP_SERVERS="k1:9093,k2:9093",
        REDIS_URL="rediss://svc:pw@redis:6380/2",
        REDIS_CLUSTER="TRUE",
        HTTP_HOST="0.0.0.0",
        HTTP_PORT="9000",
        CONSUMER_GROUP="g",
        LOW_BALANCE_THRESHOLDS="30, 60,30,12.25",
        RESULT_HOLD_SECONDS="60",
        BATCH_MAX_RECORDS="1",
        BATCH_TIMEOUT_MS="0",
        FETCH_MAX_WAIT_MS="0",
        OUTBOX_RETENTION_SECONDS="3600",
        HELD_SWEEP_INTERVAL_SECONDS="2.5",
        GC_THRESHOLD="python",
        GRACEFUL_TIMEOUT_SECONDS="0",
        LOG_LEVEL="debug",
        KAFKA_SECURITY_PROTOCOL="sasl_ssl",
        KAFKA_SASL_MECHANISM="scram-sha-512",
        KAFKA_SASL_USERNAME="svc",
        KAFKA_SASL_PASSWORD="pw",
        KAFKA_SSL_CAFILE="/etc/ca.pem",
        HTTP_TOKEN="t",
        HTTP_JWKS_URL="https://idp.example/jwks.json",
        HTTP_JWT_ISSUER="https://idp.example",
        HTTP_JWT_AUDIENCE="learning-account",
        TRACING="OTLP",
    )
    assert settings.kafka_bootstrap_servers == "k1:9093,k2:9093"
    assert settings.redis_url == "rediss://svc:pw@redis:6380/2"
    assert settings.redis_cluster == "true"
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 9000)
    assert settings.consumer_group == "g"
    assert settings.low_balance_thresholds == (240, 120, 49)  # highest first, once each
    assert settings.result_hold_seconds == 60
    assert (settings.batch_max_records, settings.batch_timeout_ms) == (1, 0)
    assert settings.fetch_max_wait_ms == 0
    assert settings.outbox_retention_seconds == 3600
    assert settings.held_sweep_interval_seconds == 2.5
    assert settings.gc_threshold is None
    assert settings.graceful_timeout_seconds == 0
    assert (settings.log_level, settings.tracing) == ("DEBUG", "otlp")
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == "svc"
    assert reveal(settings.kafka_sasl_password) == "pw"
    assert settings.kafka_ssl_cafile == "/etc/ca.pem"
    assert reveal(settings.http_token) == "t"
    assert settings.http_jwks_url == "https://idp.example/jwks.json"
    assert settings.http_jwt_issuer == "https://idp.example"
    assert settings.http_jwt_audience == "learning-account"
    assert settings.policy.low_balance_thresholds == (240, 120, 49)
    assert settings.policy.result_hold_seconds == 60


def test_the_sweep_interval_follows_a_short_hold_unless_set() -> None:
    assert from_env(RESULT_HOLD_SECONDS="2").held_sweep_interval_seconds == 0.5
    assert from_env(RESULT_HOLD_SECONDS="0").held_sweep_interval_seconds == 0.2
    assert from_env(RESULT_HOLD_SECONDS="3600").held_sweep_interval_seconds == 5
    explicit = from_env(RESULT_HOLD_SECONDS="2", HELD_SWEEP_INTERVAL_SECONDS="7")
    assert explicit.held_sweep_interval_seconds == 7
    assert Settings(result_hold_seconds=2).held_sweep_interval_seconds == 0.5


def test_empty_values_mean_unset_where_a_setting_is_optional() -> None:
    settings = from_env(KAFKA_SASL_MECHANISM="", KAFKA_SASL_PASSWORD="", HTTP_TOKEN="")
    assert settings.kafka_sasl_mechanism is None
    assert settings.kafka_sasl_password is None and settings.http_token is None
    assert from_env(LOW_BALANCE_THRESHOLDS="").low_balance_thresholds == ()


@pytest.mark.parametrize(
    ("name", "value", "accepts"),
    [
        ("HTTP_PORT", "abc", "an integer from 1 to 65535"),
        ("HTTP_PORT", "0", "an integer from 1 to 65535"),
        ("HTTP_PORT", "65536", "an integer from 1 to 65535"),
        ("HTTP_PORT", "99999", "an integer from 1 to 65535"),
        ("BATCH_MAX_RECORDS", "0", "an integer of at least 1"),
        ("BATCH_TIMEOUT_MS", "-1", "an integer of at least 0"),
        ("FETCH_MAX_WAIT_MS", "1.5", "an integer of at least 0"),
        ("RESULT_HOLD_SECONDS", "-1", "a number of at least 0"),
        ("RESULT_HOLD_SECONDS", "nan", "a number of at least 0"),
        ("OUTBOX_RETENTION_SECONDS", "0", "a number of at least 0.001"),
        ("OUTBOX_RETENTION_SECONDS", "0.0004", "a number of at least 0.001"),
        ("OUTBOX_RETENTION_SECONDS", "inf", "a number of at least 0.001"),
        ("KAFKA_MAX_MESSAGE_BYTES", "524287", "an integer of at least 524288"),
        ("HELD_SWEEP_INTERVAL_SECONDS", "0", "a number above 0"),
        ("GRACEFUL_TIMEOUT_SECONDS", "soon", "a number of at least 0"),
        ("GC_THRESHOLD", "1,2", "three counts like 100000,50,100 (the first above 0), or python"),
        ("GC_THRESHOLD", "0,1,1", "three counts like 100000,50,100 (the first above 0), or python"),
        ("LOW_BALANCE_THRESHOLDS", "60,x", "comma-separated credit amounts above 0"),
        ("LOW_BALANCE_THRESHOLDS", "60.1", "comma-separated credit amounts above 0"),
        ("LOW_BALANCE_THRESHOLDS", "0", "comma-separated credit amounts above 0"),
        ("CONSUMER_GROUP", "", "a non-empty value"),
        ("KAFKA_BOOTSTRAP_SERVERS", "", "a non-empty value"),
        ("HTTP_JWKS_URL", "file:///etc/passwd", "an http:// or https:// URL"),
    ],
)
def test_a_value_out_of_bounds_is_refused_naming_the_variable(
    name: str, value: str, accepts: str
) -> None:
    line = refusal(**{name: value})
    assert line.startswith(f"LA_{name}: must be {accepts}")
    assert line.endswith(f"(got {value!r})")
    assert "\n" not in line


@pytest.mark.parametrize(
    ("name", "value"),
    [("HTTP_PORT", "1"), ("HTTP_PORT", "65535"), ("BATCH_MAX_RECORDS", "1")],
)
def test_the_bounds_themselves_are_accepted(name: str, value: str) -> None:
    assert getattr(from_env(**{name: value}), name.lower()) == int(value)


@pytest.mark.parametrize(
    ("name", "choices", "refused"),
    [
        ("KAFKA_SECURITY_PROTOCOL", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"), "plaintxt"),
        ("KAFKA_SASL_MECHANISM", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), "SCRAM-SHA-1"),
        ("REDIS_CLUSTER", ("auto", "true", "false"), "yes"),
        ("TRACING", ("off", "console", "otlp"), "jaeger"),
        ("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), "LOUD"),
    ],
)
def test_a_choice_is_one_of_its_values_and_nothing_else(
    name: str, choices: tuple[str, ...], refused: str
) -> None:
    for choice in choices:
        assert getattr(from_env(**{name: choice}), name.lower()) == choice
        assert getattr(from_env(**{name: f" {choice.swapcase()} "}), name.lower()) == choice
    assert refusal(**{name: refused}) == (
        f"LA_{name}: must be one of {', '.join(choices)} (got {refused!r})"
    )


def test_a_misspelt_protocol_never_turns_tls_on() -> None:
    assert refusal(KAFKA_SECURITY_PROTOCOL="plaintxt") == (
        "LA_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        " (got 'plaintxt')"
    )


def test_several_bad_values_are_named_on_one_line() -> None:
    line = refusal(HTTP_PORT="abc", TRACING="x")
    assert "\n" not in line
    assert "LA_HTTP_PORT: must be an integer" in line and "LA_TRACING: must be one of" in line


def test_secrets_are_neither_in_the_repr_nor_in_an_error_line() -> None:
    settings = from_env(
        KAFKA_SASL_PASSWORD="s3cret",
        HTTP_TOKEN="t0ken",
        REDIS_URL="redis://svc:pa55@redis:6379/0",
    )
    text = repr(settings) + str(settings)
    assert "s3cret" not in text and "t0ken" not in text and "pa55" not in text
    assert reveal(settings.kafka_sasl_password) == "s3cret"
    assert reveal(None) == ""
    line = refusal(REDIS_URL="http://svc:pa55@redis:6379/0")
    assert line == "LA_REDIS_URL: must be a redis://, rediss:// or unix:// URL"


def test_construction_reads_no_environment_and_checks_the_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LA_HTTP_PORT", "9999")
    assert Settings().http_port == 8080
    assert Settings.from_env().http_port == 9999
    assert Settings(low_balance_thresholds=(120, 240)).low_balance_thresholds == (240, 120)
    with pytest.raises(ValidationError):
        Settings(http_port=99999)


def write_public_key(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)
    return path


def test_the_jwt_key_file_must_hold_an_rsa_or_p256_public_key(tmp_path: Path) -> None:
    rsa_file = write_public_key(
        tmp_path / "rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_file = write_public_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    assert from_env(HTTP_JWT_PUBLIC_KEY_FILE=str(rsa_file)).http_jwt_public_key_file == rsa_file
    assert from_env(HTTP_JWT_PUBLIC_KEY_FILE=str(ec_file)).http_jwt_public_key_file == ec_file
    p384 = write_public_key(tmp_path / "p384.pem", ec.generate_private_key(ec.SECP384R1()))
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("not a key")
    accepts = "LA_HTTP_JWT_PUBLIC_KEY_FILE: must be a readable PEM file of an RSA or EC P-256"
    for path in (p384, not_pem, tmp_path / "missing.pem"):
        assert refusal(HTTP_JWT_PUBLIC_KEY_FILE=str(path)).startswith(accepts)
    both = refusal(HTTP_JWT_PUBLIC_KEY_FILE=str(rsa_file), HTTP_JWKS_URL="https://idp.example/jwks")
    assert both.startswith("LA_HTTP_JWKS_URL: must be unset when LA_HTTP_JWT_PUBLIC_KEY_FILE")


COMMANDS = [
    ["serve"],
    ["dev"],
    ["demo"],
    ["statement", "mary"],
    ["rebuild"],
    ["send", "feed.jsonl"],
    ["redrive"],
    ["asyncapi"],
]


def run_console_script(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "learning-account"
    # nothing listens there: a command that got past its settings would fail differently
    unreachable = {
        "LA_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "LA_REDIS_URL": "redis://127.0.0.1:1",
    }
    return subprocess.run(
        [str(script), *args],
        env={"PATH": "/usr/bin:/bin", **unreachable, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("LA_HTTP_PORT", "abc", "LA_HTTP_PORT: must be an integer from 1 to 65535 (got 'abc')"),
        ("LA_HTTP_PORT", "99999", "LA_HTTP_PORT: must be an integer from 1 to 65535 (got '99999')"),
        (
            "LA_BATCH_MAX_RECORDS",
            "0",
            "LA_BATCH_MAX_RECORDS: must be an integer of at least 1 (got '0')",
        ),
        (
            "LA_KAFKA_SECURITY_PROTOCOL",
            "plaintxt",
            "LA_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            " (got 'plaintxt')",
        ),
    ],
)
def test_serve_with_a_bad_value_exits_2_with_one_line(
    name: str, value: str, line: str, tmp_path: Path
) -> None:
    done = run_console_script(["serve"], {name: value}, tmp_path)
    assert done.returncode == 2
    assert done.stderr == line + "\n"
    assert done.stdout == ""


def test_every_command_stops_on_a_bad_value_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "feed.jsonl").write_text("")
    for args in COMMANDS:
        done = run_console_script(args, {"LA_HTTP_PORT": "abc"}, tmp_path)
        assert (done.returncode, done.stderr) == (
            2,
            "LA_HTTP_PORT: must be an integer from 1 to 65535 (got 'abc')\n",
        ), args
    assert not (tmp_path / ".devstack").exists()


def test_the_readme_configuration_table_names_every_setting() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `LA_")]
    documented: set[str] = set()
    for row in rows:
        names = re.findall(r"`(LA_[A-Z_]+|_[A-Z_]+)`", row.split(" | ")[0])
        # `LA_KAFKA_SASL_MECHANISM` / `_USERNAME`: a suffix replaces the first name's last word
        stem = names[0].rsplit("_", 1)[0]
        documented.update(name if name.startswith("LA_") else stem + name for name in names)
    assert documented == {Settings.env_name(field) for field in Settings.model_fields}
