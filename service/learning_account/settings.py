"""Configuration from `LA_*` environment variables (contracts.md lists them with defaults).

One typed, bounded model. `Settings.from_env()` reads the environment, the one way every
command gets its settings; a value a field does not accept raises `SettingsError`, one line
naming the variable and what it accepts. `Settings(field=value)` takes values as given and reads
no environment (tests, tools).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlparse

from annotated_types import Ge, Gt, Le, MinLen
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from learning_account.domain.model import Policy
from learning_account.domain.numbers import to_quarters
from learning_account.runtime import parse_gc_threshold

ENV_PREFIX = "LA_"
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
"""The largest record the producer sends (1 MiB, Kafka's default `message.max.bytes`)."""
# the rules' defaults, stated once in the domain
_DEFAULT_POLICY = Policy()


class SettingsError(ValueError):
    """A setting has a value its field does not accept; the message is one line for people."""


def reveal(secret: SecretStr | None) -> str:
    """The text of a secret setting, "" when unset (what the clients take for "none")."""
    return secret.get_secret_value() if secret is not None else ""


def _blank_is_none(value: Any) -> Any:
    # an empty variable means unset, as `NAME=` in a compose file or a ConfigMap does
    return None if value == "" else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _thresholds(value: Any) -> Any:
    """Text is credits (`60,30`, the variable's form); a tuple is already quarter-credits."""
    if not isinstance(value, str):
        return value
    accepts = "comma-separated credit amounts above 0, each a multiple of 0.25 (like 60,30)"
    try:
        quarters = [to_quarters(part.strip()) for part in value.split(",") if part.strip()]
    except (ArithmeticError, ValueError):
        raise ValueError(accepts) from None
    if any(quarter <= 0 for quarter in quarters):
        raise ValueError(accepts)
    return quarters


def _sources(value: Any) -> Any:
    """Comma-separated sources (case-sensitive, an entry ending in `*` a prefix); none: unset."""
    if not isinstance(value, str):
        return value
    entries = tuple(part.strip() for part in value.split(",") if part.strip())
    return entries or None


def _highest_first(quarters: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(quarters), reverse=True))


def _gc_threshold(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_gc_threshold(value)
        except ValueError:
            raise ValueError(
                "three counts like 100000,50,100 (the first above 0), or python"
            ) from None
    return value


def _redis_url(url: str) -> str:
    if urlparse(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("a redis://, rediss:// or unix:// URL")
    return url


def _public_key_file(path: Path | None) -> Path | None:
    if path is not None:
        from learning_account.entrypoints.access import load_public_key

        try:
            load_public_key(path)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else error
            raise ValueError(
                f"a readable PEM file of an RSA or EC P-256 public key ({reason})"
            ) from None
    return path


def _http_url(url: str | None) -> str | None:
    if url is not None:
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("an http:// or https:// URL")
    return url


NonEmpty = Annotated[str, Field(min_length=1)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_is_none)]
Secret = Annotated[SecretStr | None, BeforeValidator(_blank_is_none)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, allow_inf_nan=False, extra="forbid"
    )

    kafka_bootstrap_servers: NonEmpty = "127.0.0.1:9092"
    redis_url: Annotated[str, AfterValidator(_redis_url), Field(repr=False)] = (
        "redis://127.0.0.1:6379/0"
    )
    """May carry a password (`redis://user:password@host`): kept out of repr and error lines."""
    redis_cluster: Annotated[Literal["auto", "true", "false"], BeforeValidator(_lower)] = "auto"
    """`auto` asks the server at start; `true` / `false` force a cluster or a single server."""
    http_host: NonEmpty = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    consumer_group: NonEmpty = "learning-account"
    low_balance_thresholds: Annotated[
        tuple[int, ...], NoDecode, BeforeValidator(_thresholds), AfterValidator(_highest_first)
    ] = _DEFAULT_POLICY.low_balance_thresholds
    """In quarter-credits (60 credits = 240), highest first; the variable gives credits."""
    result_hold_seconds: Annotated[float, Field(ge=0)] = _DEFAULT_POLICY.result_hold_seconds
    allowed_sources: Annotated[tuple[str, ...] | None, NoDecode, BeforeValidator(_sources)] = None
    """None: every source; else the CloudEvents sources whose events are read, an entry ending
    in `*` a prefix (any other source is dead-lettered `source_not_allowed`)."""
    batch_max_records: Annotated[int, Field(ge=1)] = 2000
    """Records per batch when a backlog waits: the per-batch costs (round trips, the flush,
    the commit) are spread over more events; under light traffic batches hold what arrived
    within `batch_timeout_ms`."""
    batch_timeout_ms: Annotated[int, Field(ge=0)] = 50
    fetch_max_wait_ms: Annotated[int, Field(ge=0)] = 20
    """How long a fetch may wait at the broker for data: the latency floor when traffic is light."""
    outbox_retention_seconds: Annotated[float, Field(ge=0.001)] = 7 * 24 * 3600
    """At least 1 ms: the outbox is written with a retention in whole milliseconds."""
    kafka_max_message_bytes: Annotated[int, Field(ge=512 * 1024)] = DEFAULT_MAX_MESSAGE_BYTES
    """The largest record the producer sends (its `max_request_size`); a step with a larger
    output is dead-lettered. At least 512 KiB, so that a dead letter fits (its payload, cut at
    64 KiB, may grow sixfold as JSON text)."""
    held_sweep_interval_seconds: Annotated[float, Field(gt=0)] = 5.0
    """Unset: every 5 s, or more often when the holding time is short (see below)."""
    gc_threshold: Annotated[
        tuple[int, int, int] | None, NoDecode, BeforeValidator(_gc_threshold)
    ] = (100_000, 50, 100)
    """Python's cyclic GC thresholds once started (None: Python's own); see runtime.tune_gc."""
    graceful_timeout_seconds: Annotated[float, Field(ge=0)] = 30.0
    stall_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Readiness fails when a partition with records to read made no progress for this long."""
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    kafka_security_protocol: Annotated[
        Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)
    ] = "PLAINTEXT"
    kafka_sasl_mechanism: Annotated[
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None,
        BeforeValidator(_upper),
        BeforeValidator(_blank_is_none),
    ] = None
    """None: PLAIN when the protocol is SASL_*."""
    kafka_sasl_username: OptionalText = None
    kafka_sasl_password: Secret = None
    kafka_ssl_cafile: OptionalText = None
    http_token: Secret = None
    """Static bearer token for machine clients (access.py)."""
    http_jwt_public_key_file: Annotated[
        Path | None, BeforeValidator(_blank_is_none), AfterValidator(_public_key_file)
    ] = None
    http_jwks_url: Annotated[str | None, BeforeValidator(_blank_is_none)] = None
    http_jwt_issuer: OptionalText = None
    http_jwt_audience: OptionalText = None
    tracing: Annotated[Literal["off", "console", "otlp"], BeforeValidator(_lower)] = "off"
    """OpenTelemetry: `off`, `console` or `otlp` (OTEL_EXPORTER_OTLP_* configure the exporter)."""

    @model_validator(mode="before")
    @classmethod
    def _sweep_interval_follows_the_hold(cls, data: Any) -> Any:
        """By default a sweep every 5 s, or more often when the holding time is short."""
        if isinstance(data, dict) and data.get("held_sweep_interval_seconds") is None:
            try:
                hold = float(data.get("result_hold_seconds", _DEFAULT_POLICY.result_hold_seconds))
            except (TypeError, ValueError):
                return data  # the hold's own check reports it
            data = {**data, "held_sweep_interval_seconds": min(5.0, max(0.2, hold / 4))}
        return data

    @field_validator("http_jwks_url")
    @classmethod
    def _one_key_source(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is not None and info.data.get("http_jwt_public_key_file") is not None:
            raise ValueError(f"unset when {ENV_PREFIX}HTTP_JWT_PUBLIC_KEY_FILE is set")
        return _http_url(url)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment is read by from_env only, so Settings(...) means the values given
        return (init_settings,)

    @property
    def policy(self) -> Policy:
        return Policy(
            low_balance_thresholds=self.low_balance_thresholds,
            result_hold_seconds=self.result_hold_seconds,
        )

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{ENV_PREFIX}{field.upper()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of `env` (default: the process environment); SettingsError if bad."""
        env = os.environ if env is None else env
        values = _EnvironmentSource(cls, env)()
        try:
            return cls(**values)
        except ValidationError as error:
            lines = [_describe(cls, detail, env) for detail in error.errors()]
            raise SettingsError("; ".join(lines)) from None


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, read by exact name."""

    def __init__(self, settings_cls: type[Settings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        assert issubclass(self.settings_cls, Settings)
        names = [self.settings_cls.env_name(field) for field in self.settings_cls.model_fields]
        # the source matches lower-cased names; the variables themselves are the upper-case ones
        return {name.lower(): value for name in names if (value := self._env.get(name)) is not None}


def _describe(cls: type[Settings], detail: ErrorDetails, env: Mapping[str, str]) -> str:
    """`LA_HTTP_PORT: must be an integer from 1 to 65535 (got 'abc')`."""
    field = str(detail["loc"][0]) if detail["loc"] else ""
    if field not in cls.model_fields:
        return detail["msg"]
    name = cls.env_name(field)
    info = cls.model_fields[field]
    if detail["type"] == "value_error":
        accepts = str(detail.get("ctx", {}).get("error", detail["msg"]))
    else:
        accepts = _accepts(info) or detail["msg"]
    raw = env.get(name)
    if raw is None or not info.repr or _inner(info.annotation) is SecretStr:
        return f"{name}: must be {accepts}"
    return f"{name}: must be {accepts} (got {raw!r})"


def _inner(annotation: Any) -> Any:
    """`X` of `X | None`."""
    arguments = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not Literal and len(arguments) == 1:
        return arguments[0]
    return annotation


def _accepts(info: FieldInfo) -> str:
    """What a field accepts, in words, from its type and bounds."""
    annotation = _inner(info.annotation)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(get_args(annotation))
    bounds = {type(item): item for item in info.metadata}
    kind = {int: "an integer", float: "a number"}.get(annotation)
    if kind is None:
        return "a non-empty value" if MinLen in bounds else ""
    if Ge in bounds and Le in bounds:
        return f"{kind} from {bounds[Ge].ge} to {bounds[Le].le}"
    if Gt in bounds:
        return f"{kind} above {bounds[Gt].gt}"
    if Ge in bounds:
        return f"{kind} of at least {bounds[Ge].ge}"
    return kind
