"""Every command builds its clients from the same settings: Kafka security, Redis Cluster or not."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import aiokafka
import confluent_kafka
import confluent_kafka.admin
import pytest
from faststream.kafka.security import parse_security
from redis.asyncio import RedisCluster

from learning_account.adapters.clients import (
    DeliveryError,
    ServiceKafka,
    deliver,
    faststream_security,
    kafka_security,
)
from learning_account.adapters.publisher import Publisher
from learning_account.adapters.redis_layout import account_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.bootstrap import (
    KafkaClients,
    asyncapi_document,
    build_service,
    kafka_admin,
    kafka_producer,
)
from learning_account.domain.model import Policy
from learning_account.domain.statement import statement
from learning_account.entrypoints import cli
from learning_account.entrypoints import consumer as consumer_entrypoint
from learning_account.observability.metrics import Metrics
from learning_account.processing.outputs import OutputMessage
from learning_account.processing.pipeline import InputRecord, Processor
from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS, STRUCTURED_HEADERS
from learning_account_dev import commands as dev_commands
from learning_account_dev import events as ev
from learning_account_dev.devstack import (
    ensure_topics,
    free_port,
    start_tansu,
    wait_for_kafka,
)
from support.service import send

CA_NAME = "learning-account test CA"
USERNAME, PASSWORD = "svc-learning-account", "s3cret"


def write_ca(path: Path) -> Path:
    """A self-signed CA certificate (PEM): what LA_KAFKA_SSL_CAFILE names in a deployment."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def sasl_settings(ca_file: Path) -> dict[str, str]:
    """The LA_* variables of a SASL_SSL Kafka with SCRAM-SHA-512, as in deploy/k8s."""
    return {
        "LA_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LA_KAFKA_SASL_USERNAME": USERNAME,
        "LA_KAFKA_SASL_PASSWORD": PASSWORD,
        "LA_KAFKA_SSL_CAFILE": str(ca_file),
    }


def assert_sasl(options: dict[str, Any], bootstrap: str) -> None:
    """The SASL_SSL settings, in librdkafka's names (confluent-kafka's clients) or aiokafka's
    keyword arguments (the consumer FastStream builds)."""
    if "bootstrap.servers" in options:
        assert options["bootstrap.servers"] == bootstrap
        assert options["security.protocol"] == "sasl_ssl"
        assert options["sasl.mechanism"] == "SCRAM-SHA-512"
        assert (options["sasl.username"], options["sasl.password"]) == (USERNAME, PASSWORD)
        context = ssl.create_default_context(cafile=options["ssl.ca.location"])
    else:
        assert options["bootstrap_servers"] in (bootstrap, [bootstrap])  # FastStream's: a list
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
            USERNAME,
            PASSWORD,
        )
        context = options["ssl_context"]
    trusted = context.get_ca_certs()
    assert [dict(pair[0] for pair in ca["subject"]) for ca in trusted] == [{"commonName": CA_NAME}]


# --------------------------------------------------------------------------- Kafka security


class FirstClientStarted(BaseException):
    """A stub client was asked to reach the broker: as far as a command goes without a SASL
    broker (a BaseException, which the commands' retries on `Exception` let through)."""


class _Anything:
    """Whatever a command asks of a stub client: callable, awaitable (None), any attribute."""

    def __call__(self, *args: Any, **kwargs: Any) -> _Anything:
        return self

    def __await__(self) -> Iterator[None]:
        return iter(())

    def __getattr__(self, name: str) -> _Anything:
        return self


@dataclass
class Built:
    kind: str
    options: dict[str, Any]


class _NoTopics:
    """The cluster metadata of a broker without the input topics (aiokafka's and librdkafka's
    forms)."""

    topics: ClassVar[dict[str, Any]] = {}

    async def fetch_all_metadata(self) -> _NoTopics:
        return self

    def partitions_for_topic(self, topic: str) -> None:
        return None


# what each kind of librdkafka client asks of the broker first
_REACHING = ("list_topics", "produce", "assign", "consume", "create_topics", "describe_cluster")


class KafkaSpy:
    """Stub Kafka clients, given to a command as its `bootstrap.KafkaClients`: confluent-kafka's
    producers, consumers and admin clients (built with a configuration dict), and aiokafka's
    consumer of FastStream (built with keyword arguments, started).

    Each construction is recorded; the first call that reaches the broker (`start()` of an
    aiokafka client) raises FirstClientStarted unless its kind is in `starting`, where it
    succeeds and the command goes on to its next client.
    """

    def __init__(self) -> None:
        self.built: list[Built] = []
        self.starting: set[str] = set()
        self.clients = KafkaClients(
            self._stub("producer"), self._stub("consumer"), self._stub("admin")
        )

    def replace_classes(self, monkeypatch: pytest.MonkeyPatch, *kinds: str) -> None:
        """Put the stubs of `kinds` in confluent-kafka's place, for the clients no command is
        given (`dev` and `demo` use the library's classes)."""
        for kind in kinds:
            stub = getattr(self.clients, kind)
            if kind == "admin":
                monkeypatch.setattr(confluent_kafka.admin, "AdminClient", stub)
            else:
                monkeypatch.setattr(confluent_kafka, kind.title(), stub)

    def replace_group_consumer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put a stub in the place of the librdkafka consumer the service's group member builds:
        it records its configuration and raises FirstClientStarted."""

        def consumer(config: dict[str, Any]) -> None:
            self.built.append(Built("consumer", config))
            raise FirstClientStarted("consumer")

        monkeypatch.setattr(consumer_entrypoint, "Consumer", consumer)

    def _stub(self, kind: str) -> type:
        spy = self

        def reach(*args: Any, **kwargs: Any) -> Any:
            if kind not in spy.starting:
                raise FirstClientStarted(kind)
            return _NoTopics()

        class StubClient(_Anything):
            def __init__(self, *args: Any, **options: Any) -> None:
                config = args[0] if args and isinstance(args[0], dict) else options
                spy.built.append(Built(kind, config))

            async def start(self) -> None:
                reach()

            list_topics = consume = assign = create_topics = describe_cluster = staticmethod(reach)

            def produce(self, *args: Any, on_delivery: Any = None, **kwargs: Any) -> None:
                reach()
                if on_delivery is not None:
                    on_delivery(None, None)  # acknowledged at once

            def flush(self, *args: Any) -> int:
                return 0

            def close(self, *args: Any) -> None:
                pass

            @property
            def client(self) -> _NoTopics:
                return _NoTopics()  # the start-up check of partition counts finds no topic

        return StubClient


@pytest.fixture
def listening() -> Iterator[str]:
    """An open port that never answers Kafka: `dev` finds a broker there and starts none."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


# Tansu, the broker of the tests, has no SASL or TLS listener here: each command runs with the
# SASL_SSL settings until a Kafka client (a stub) would reach the broker, and the configuration
# every client it built received, its own and the consumer FastStream builds for `serve`, is
# checked.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("command", "kinds"),
    [
        ("serve", ["producer", "admin", "consumer"]),
        ("dev", ["admin"]),
        ("demo", ["producer", "consumer"]),
        ("rebuild", ["consumer"]),
        ("send", ["producer"]),
        ("redrive", ["consumer", "producer"]),
    ],
)
def test_each_command_gives_its_kafka_clients_the_sasl_settings(
    command: str,
    kinds: list[str],
    tmp_path: Path,
    redis_url: str,
    listening: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **sasl_settings(write_ca(tmp_path / "ca.pem")),
        "LA_KAFKA_BOOTSTRAP_SERVERS": listening,
        "LA_REDIS_URL": redis_url,
        "LA_HTTP_PORT": str(free_port()),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spy = KafkaSpy()
    argv = [command]
    if command == "serve":
        spy.replace_group_consumer(monkeypatch)
        spy.starting = {"producer", "admin"}  # the service's own, started before the consumer
    elif command in ("dev", "demo"):
        spy.replace_classes(monkeypatch, "producer", "consumer", "admin")
        argv += ["--state-dir", str(tmp_path / "devstack")]
    if command == "demo":
        monkeypatch.setattr(dev_commands, "_service_is_up", lambda settings: True)
        spy.starting = {"producer"}  # the demo's events go out, then it reads the outputs
    elif command == "send":
        feed = tmp_path / "feed.jsonl"
        feed.write_text(json.dumps(ev.registration("sasl", 2016, {"A": 6})) + "\n")
        argv.append(str(feed))
    elif command == "rebuild":
        argv += ["--redis-url", redis_url.rsplit("/", 1)[0] + "/6"]
    with pytest.raises(FirstClientStarted):
        cli.main(argv, kafka=spy.clients)
    assert [client.kind for client in spy.built] == kinds
    for client in spy.built:
        assert_sasl(client.options, listening)


def test_the_faststream_broker_gets_the_same_security_as_the_aiokafka_options(
    tmp_path: Path,
) -> None:
    ca_file = write_ca(tmp_path / "ca.pem")
    cases = [
        {"LA_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"},
        {"LA_KAFKA_SECURITY_PROTOCOL": "SSL", "LA_KAFKA_SSL_CAFILE": str(ca_file)},
        {"LA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LA_KAFKA_SASL_USERNAME": USERNAME},
        sasl_settings(ca_file),
        {**sasl_settings(ca_file), "LA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
        {**sasl_settings(ca_file), "LA_KAFKA_SASL_MECHANISM": ""},
    ]
    for env in cases:
        settings = Settings.from_env(env)
        ours = kafka_security(settings)
        theirs = parse_security(faststream_security(settings))
        for options in (ours, theirs):  # a fresh context each time: compare what it trusts
            if options.get("ssl_context") is not None:
                options["ssl_context"] = options["ssl_context"].get_ca_certs()
        assert theirs == ours, env
    spec = json.loads(asyncapi_document(Settings.from_env(sasl_settings(ca_file))))
    schemes = spec["components"]["securitySchemes"]
    assert [scheme["type"] for scheme in schemes.values()] == ["scramSha512"]


# --------------------------------------------------------------------------- Redis Cluster


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "learning_account", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def off_the_first_node(cluster: RedisCluster, url: str) -> str:
    """A student whose account lives on another master than the URL's: a single-server
    client on the URL would get MOVED for it."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return next(
        student
        for student in (f"cluster-{n}" for n in range(100))
        if cluster.get_node_from_key(account_key(student)).port != port
    )


async def seed_balances(cluster: RedisCluster, student: str) -> list[float]:
    account = await RedisStore(cluster).get(student)
    assert account is not None
    return [row.balance / 4 for row in statement(account, 2019)]


@pytest.mark.parametrize("mode", ["auto", "true"])
async def test_statement_reads_a_redis_cluster(
    mode: str, cluster: RedisCluster, redis_cluster_url: str, tmp_path: Path
) -> None:
    student = off_the_first_node(cluster, redis_cluster_url)
    events = ev.mary_track(student)
    await Processor(RedisStore(cluster), Policy()).process(
        [InputRecord(ev.topic_of(e), 0, n, None, ev.to_bytes(e), n) for n, e in enumerate(events)]
    )
    env = {
        **sasl_settings(write_ca(tmp_path / "ca.pem")),
        "LA_REDIS_URL": redis_cluster_url,
        "LA_REDIS_CLUSTER": mode,
    }
    done = await asyncio.to_thread(run_cli, "statement", student, env=env)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[-3:] for line in done.stdout.splitlines() if line.strip()}
    assert rows["Balance"] == ["200", "200", "200"]


@pytest.fixture(scope="module")
def history_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module alone, its input topics holding one student's seed track."""
    port = free_port()
    broker = start_tansu(port, tmp_path_factory.mktemp("tansu"))
    bootstrap = f"127.0.0.1:{port}"

    async def fill() -> None:
        await wait_for_kafka(bootstrap)
        await ensure_topics(bootstrap, {t: 1 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
        await send(bootstrap, ev.mary_track("history"))

    try:
        asyncio.run(fill())
        yield bootstrap
    finally:
        broker.stop()


@pytest.mark.parametrize("mode", ["auto", "true"])
async def test_rebuild_writes_into_a_redis_cluster(
    mode: str, history_broker: str, cluster: RedisCluster, redis_cluster_url: str
) -> None:
    env = {
        "LA_KAFKA_BOOTSTRAP_SERVERS": history_broker,
        "LA_REDIS_URL": redis_cluster_url,
        "LA_REDIS_CLUSTER": mode,
    }
    done = await asyncio.to_thread(run_cli, "rebuild", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["applied"] == len(ev.mary_track("history"))
    assert await seed_balances(cluster, "history") == [200, 200, 200]


@pytest.mark.parametrize("mode", ["auto", "true"])
async def test_serve_reads_a_redis_cluster(
    mode: str, history_broker: str, cluster: RedisCluster, redis_cluster_url: str
) -> None:
    student = off_the_first_node(cluster, redis_cluster_url)
    await Processor(RedisStore(cluster), Policy()).process(
        [
            InputRecord(ev.topic_of(e), 0, n, None, ev.to_bytes(e), n)
            for n, e in enumerate(ev.mary_track(student))
        ]
    )
    settings = Settings.from_env(
        {
            "LA_KAFKA_BOOTSTRAP_SERVERS": history_broker,
            "LA_REDIS_URL": redis_cluster_url,
            "LA_REDIS_CLUSTER": mode,
            "LA_HTTP_PORT": str(free_port()),
            "LA_CONSUMER_GROUP": f"cluster-{mode}",
        }
    )
    service = build_service(settings)
    await service.start()
    try:
        assert isinstance(service.store.redis, RedisCluster)
        url = f"http://127.0.0.1:{settings.http_port}/accounts/{student}"
        body = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(url, timeout=5)))
        assert body["balance"] == 200
    finally:
        await service.stop()


# --------------------------------------------------------------------------- the service's own


def service_kafka(bootstrap: str, *topics: str, timeout: float = 10.0) -> ServiceKafka:
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    return ServiceKafka(
        lambda: kafka_producer(settings),
        lambda: kafka_admin(settings),
        topics=topics,
        timeout=timeout,
    )


async def test_the_service_kafka_does_not_connect_to_a_broker_that_is_not_there(
    listening: str,
) -> None:
    kafka = service_kafka(listening, timeout=2)
    with pytest.raises(confluent_kafka.KafkaException):
        await kafka.connect()
    await kafka.close()


async def test_partition_counts_create_no_topic_and_the_publisher_keeps_each_key_in_order(
    history_broker: str,
) -> None:
    topic, missing = f"ordered-{uuid.uuid4().hex[:8]}", f"missing-{uuid.uuid4().hex[:8]}"
    await ensure_topics(history_broker, {topic: 3})
    kafka = service_kafka(history_broker, topic)
    await kafka.connect()
    try:
        assert await kafka.ping()
        counts = await kafka.partition_counts([topic, missing, *INPUT_TOPICS])
        assert counts == {topic: 3, **{name: 1 for name in INPUT_TOPICS}}
        keys = [f"student-{n}".encode() for n in range(6)]
        messages = [
            OutputMessage(topic, keys[n % 6], f"{n}".encode(), f"id-{n}", "balance-changed")
            for n in range(300)
        ]
        metrics = Metrics()
        await Publisher(kafka, metrics).publish(messages)
    finally:
        await kafka.close()
    assert metrics.registry.get_sample_value("la_outputs_published_total", {"topic": topic}) == 300
    # read back with another client: aiokafka's
    admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=history_broker)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()
    finally:
        await admin.close()
    consumer = aiokafka.AIOKafkaConsumer(
        topic, bootstrap_servers=history_broker, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        records: list[Any] = []
        while len(records) < len(messages):
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), timeout=30)
            records.extend(record for part in batch.values() for record in part)
    finally:
        await consumer.stop()
    for key in keys:
        mine = [r for r in records if r.key == key]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [m.value for m in messages if m.key == key]
        assert all(list(r.headers) == list(STRUCTURED_HEADERS) for r in mine)


async def test_a_record_the_broker_never_takes_fails_its_delivery(kafka_bootstrap: str) -> None:
    """The producers report failed deliveries only (`delivery.report.only.error`): a record
    that times out in librdkafka is still reported, and `deliver` raises; the records of the
    same producer that reach the broker are delivered."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{unused.getsockname()[1]}"
    settings = Settings(kafka_bootstrap_servers=nowhere)
    producer = kafka_producer(settings, config={"message.timeout.ms": 500})
    try:
        with pytest.raises(DeliveryError, match="1 of 1 records not delivered"):
            await deliver(producer, [("learning-account.balance-changed.v1", b"k", b"v", [])])
    finally:
        producer.flush(0)
    good = kafka_producer(Settings(kafka_bootstrap_servers=kafka_bootstrap))
    topic = OUTPUT_TOPICS[0]
    assert await deliver(good, [(topic, b"k", b"v", []), (topic, b"k", b"w", [])]) == 2
    assert len(good) == 0
