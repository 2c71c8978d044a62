"""The benchmark's child processes, the CPU they use, and py-spy attached to one of them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from common import HERE, PARTITIONS, REFERENCE_TOPICS, REPO, say

from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev.devstack import (
    LocalProcess,
    ensure_topics,
    free_port,
    start_redis,
    start_tansu,
    wait_for_kafka,
)

# the Redis settings of deploy/docker-compose.yml: an account hash stays a listpack
REDIS_ARGS = ("--hash-max-listpack-value", "1024", "--hash-max-listpack-entries", "24")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads); NaN once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds of named groups of processes (a consumer, the broker, Redis), read together."""

    def __init__(self, pids: Mapping[str, Sequence[int]]) -> None:
        self.pids = {name: list(group) for name, group in pids.items()}

    def read(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in group) for name, group in self.pids.items()}

    @staticmethod
    def us_per_event(
        first: Mapping[str, float], last: Mapping[str, float], events: int
    ) -> dict[str, float | None]:
        """Each group's CPU µs per event between two readings."""
        return {
            name: (last[name] - first[name]) / events * 1e6 if events > 0 else None
            for name in first
        }


class Child:
    """A subprocess with its output in a log file; SIGTERM then SIGKILL on stop."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """The broker and the service's Redis of one run, with the input partitions' ends."""

    bootstrap: str
    redis_url: str
    work: Path
    tansu_pid: int
    redis_pid: int
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.ends.values())


def reference_child(stack: Stack, kind: str, group: str, out: str, max_records: int) -> Child:
    """One of bench/references.py's consumers (naive, ceiling, librdkafka) in its own group."""
    argv = [
        sys.executable,
        str(HERE / "references.py"),
        kind,
        "--bootstrap",
        stack.bootstrap,
        "--redis",
        stack.redis_url,
        "--group",
        group,
        "--out",
        out,
        "--max-records",
        str(max_records),
    ]
    return Child(f"{kind}-{group}", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, stack.work)


async def start_servers(work: Path, servers: list[LocalProcess]) -> tuple[Stack, str]:
    """Tansu, the service's Redis and the in-process figures' Redis; the topics created."""
    kafka_port, redis_port, in_process_port = free_port(), free_port(), free_port()
    tansu = start_tansu(kafka_port, work / "logs")
    servers.append(tansu)
    redis = start_redis(redis_port, work / "redis", log_dir=work / "logs", extra_args=REDIS_ARGS)
    servers.append(redis)
    servers.append(
        start_redis(in_process_port, work / "redis2", log_dir=work / "logs", extra_args=REDIS_ARGS)
    )
    assert tansu.pid is not None and redis.pid is not None
    stack = Stack(
        f"127.0.0.1:{kafka_port}",
        f"redis://127.0.0.1:{redis_port}/0",
        work,
        tansu_pid=tansu.pid,
        redis_pid=redis.pid,
    )
    await wait_for_kafka(stack.bootstrap)
    topics = {t: PARTITIONS for t in (*INPUT_TOPICS, *OUTPUT_TOPICS, *REFERENCE_TOPICS)}
    await ensure_topics(stack.bootstrap, topics)
    return stack, f"redis://127.0.0.1:{in_process_port}/0"


def attach_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        say("py-spy not found: pip install py-spy into the venv to profile")
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_collapsed(path: Path, top: int = 25) -> list[tuple[str, float]]:
    """Inclusive share of samples per function from a py-spy collapsed-stack file."""
    totals: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        samples += count
        for frame in set(stack.split(";")):
            name = frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/")[-1]
            totals[name] = totals.get(name, 0) + count
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [(name, count / samples) for name, count in ranked] if samples else []
