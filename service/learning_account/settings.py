"""Configuration from `LA_*` environment variables (contracts.md lists them with defaults)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .domain.model import Policy, credits_to_quarters
from .runtime import parse_gc_threshold


def _thresholds(text: str) -> tuple[int, ...]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(sorted({credits_to_quarters(value) for value in values}, reverse=True))


def _sweep_interval(env: Mapping[str, str]) -> float:
    """By default a sweep every 5 s, or more often when the holding time is short."""
    hold = float(env.get("LA_RESULT_HOLD_SECONDS", "604800"))
    return min(5.0, max(0.2, hold / 4))


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _seconds_above_zero(name: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"LA_{name} must be a number of seconds above 0, not {text!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: str = "auto"
    """`auto` asks the server at start; `true` / `false` force a cluster or a single server."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    consumer_group: str = "learning-account"
    low_balance_thresholds: tuple[int, ...] = (240,)
    """In quarter-credits (60 credits = 240)."""
    result_hold_seconds: float = 604800.0
    batch_max_records: int = 500
    batch_timeout_ms: int = 50
    fetch_max_wait_ms: int = 20
    """How long a fetch may wait at the broker for data: the latency floor when traffic is light."""
    outbox_retention_seconds: float = 7 * 24 * 3600
    held_sweep_interval_seconds: float = 5.0
    gc_threshold: tuple[int, int, int] | None = (100_000, 50, 100)
    """Python's cyclic GC thresholds once started (None: Python's own); see runtime.tune_gc."""
    graceful_timeout_seconds: float = 30.0
    stall_seconds: float = 60.0
    """Readiness fails when a partition with records to read made no progress for this long."""
    log_level: str = "INFO"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    http_token: str | None = field(default=None, repr=False)
    tracing: str = "off"
    """OpenTelemetry: `off`, `console` or `otlp` (OTEL_EXPORTER_OTLP_* configure the exporter)."""

    @property
    def policy(self) -> Policy:
        return Policy(
            low_balance_thresholds=self.low_balance_thresholds,
            result_hold_seconds=self.result_hold_seconds,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: str) -> str:
            return env.get(f"LA_{name}", default)

        def optional(name: str) -> str | None:
            value = env.get(f"LA_{name}")
            return value or None

        return cls(
            kafka_bootstrap_servers=get(
                "KAFKA_BOOTSTRAP_SERVERS", defaults.kafka_bootstrap_servers
            ),
            redis_url=get("REDIS_URL", defaults.redis_url),
            redis_cluster=_choice(get("REDIS_CLUSTER", "auto"), ("auto", "true", "false")),
            http_host=get("HTTP_HOST", defaults.http_host),
            http_port=int(get("HTTP_PORT", str(defaults.http_port))),
            consumer_group=get("CONSUMER_GROUP", defaults.consumer_group),
            low_balance_thresholds=_thresholds(get("LOW_BALANCE_THRESHOLDS", "60")),
            result_hold_seconds=float(
                get("RESULT_HOLD_SECONDS", str(int(defaults.result_hold_seconds)))
            ),
            batch_max_records=int(get("BATCH_MAX_RECORDS", str(defaults.batch_max_records))),
            batch_timeout_ms=int(get("BATCH_TIMEOUT_MS", str(defaults.batch_timeout_ms))),
            fetch_max_wait_ms=int(get("FETCH_MAX_WAIT_MS", str(defaults.fetch_max_wait_ms))),
            outbox_retention_seconds=float(
                get("OUTBOX_RETENTION_SECONDS", str(int(defaults.outbox_retention_seconds)))
            ),
            held_sweep_interval_seconds=float(
                get("HELD_SWEEP_INTERVAL_SECONDS", str(_sweep_interval(env)))
            ),
            gc_threshold=parse_gc_threshold(get("GC_THRESHOLD", "100000,50,100")),
            graceful_timeout_seconds=float(
                get("GRACEFUL_TIMEOUT_SECONDS", str(defaults.graceful_timeout_seconds))
            ),
            stall_seconds=_seconds_above_zero(
                "STALL_SECONDS", get("STALL_SECONDS", str(defaults.stall_seconds))
            ),
            log_level=get("LOG_LEVEL", defaults.log_level).upper(),
            kafka_security_protocol=get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            kafka_sasl_mechanism=optional("KAFKA_SASL_MECHANISM"),
            kafka_sasl_username=optional("KAFKA_SASL_USERNAME"),
            kafka_sasl_password=optional("KAFKA_SASL_PASSWORD"),
            kafka_ssl_cafile=optional("KAFKA_SSL_CAFILE"),
            http_token=optional("HTTP_TOKEN"),
            tracing=_choice(get("TRACING", "off"), ("off", "console", "otlp")),
        )
