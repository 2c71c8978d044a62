"""FastStream's own CLI on the service's app factory, `learning_account.bootstrap:create_app`.

`faststream run … --factory` runs as a child process configured only by LA_* variables, on the
session's broker and Redis; `faststream docs gen … --factory` writes the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis

from learning_account.settings import Settings
from learning_account.wire import INPUT_TOPICS, OUTPUT_TOPICS
from learning_account_dev import events as ev
from learning_account_dev.commands import send_events
from learning_account_dev.devstack import ensure_topics
from support.service import ServiceProcess

APP = "learning_account.bootstrap:create_app"
CREDITS = 6


class FastStreamProcess(ServiceProcess):
    """The service as `faststream run` serves it."""

    command = (sys.executable, "-m", "faststream", "run", APP, "--factory")


def addresses(document: dict[str, Any]) -> set[str]:
    return {channel["address"] for channel in document["channels"].values()}


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_faststream_docs_gen_writes_the_asyncapi_document(tmp_path: Path, form: str) -> None:
    out = tmp_path / f"asyncapi.{form}"
    options = ["--yaml"] if form == "yaml" else []

    done = subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", APP, "--factory", *options],
        cwd=tmp_path,
        env={**os.environ, "LA_KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    document = json.loads(text) if form == "json" else yaml.safe_load(text)
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["title"] == "learning-account"
    assert set(INPUT_TOPICS) <= addresses(document)
    assert set(OUTPUT_TOPICS) <= addresses(document)


def test_faststream_docs_gen_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faststream", "docs", "gen", APP, "--factory"],
        cwd=tmp_path,
        env={**os.environ, "LA_HTTP_PORT": "99999"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert "LA_HTTP_PORT" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "asyncapi.json").exists()


async def test_faststream_run_serves_the_service_until_sigterm(
    kafka_bootstrap: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    await ensure_topics(kafka_bootstrap, {t: 3 for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)})
    service = FastStreamProcess(
        tmp_path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        REDIS_URL=redis_url,  # database 0, flushed for this test by redis_client
        REDIS_CLUSTER="false",
        CONSUMER_GROUP=f"faststream-run-{uuid.uuid4().hex[:8]}",
        GRACEFUL_TIMEOUT_SECONDS="5",
    )
    student = f"faststream-{uuid.uuid4().hex[:8]}"
    service.start()
    try:
        assert service.get("/health/ready") == (200, {"ready": True})
        await send_events(
            Settings(kafka_bootstrap_servers=kafka_bootstrap),
            [ev.registration(student, 2016, {"A": CREDITS})],
        )
        deadline = time.monotonic() + 30
        while (answer := service.get(f"/accounts/{student}"))[0] != 200:
            assert time.monotonic() < deadline, f"no account within 30s:\n{service.log_tail()}"
            await asyncio.sleep(0.2)
        assert answer[1]["balance"] == 140 - CREDITS
        assert service.get("/metrics")[0] == 200
    finally:
        code = service.stop()

    log = service.log_path.read_text(errors="replace")
    assert code == 0, log
    assert "learning-account stopped" in log  # the shutdown hooks ran, not only the broker's
    assert "Traceback" not in log
