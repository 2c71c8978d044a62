"""`asyncapi validate` (the AsyncAPI CLI, npm @asyncapi/cli) passes on the AsyncAPI document.

Both the exported `contracts/asyncapi.json` and the document the service serves at
`/asyncapi.json` are checked; they are one document. `.ci/run` installs the CLI into
`.tools/npm`; its analytics and update check are off and it writes nothing outside `tmp_path`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from learning_account.bootstrap import build_service
from learning_account.settings import Settings
from support.tools import tool_missing

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "contracts" / "asyncapi.json"


def asyncapi_cli() -> str:
    local = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "asyncapi"
    found = str(local) if local.is_file() else shutil.which("asyncapi")
    if found is None:
        tool_missing("the AsyncAPI CLI (npm @asyncapi/cli, in .tools/npm) is not installed")
    return found


@pytest.fixture(autouse=True)
def _cli_present() -> None:
    """Skip (locally) or fail (in CI) before anything is built when the CLI is missing."""
    asyncapi_cli()


def asyncapi_validate(document: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`asyncapi validate`, failing on warnings too, with no analytics and no update check."""
    analytics = home / "asyncapi-analytics.json"
    analytics.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "ci"})
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "CI": "true",
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",
    }
    command = [asyncapi_cli(), "validate", "--fail-severity=warn", str(document)]
    return subprocess.run(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def assert_valid(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    print(output)  # the validator's summary, kept in the test log
    assert result.returncode == 0, output  # --fail-severity=warn: no error, no warning
    assert "is valid" in output, output


def test_exported_document_passes_asyncapi_validate(tmp_path: Path) -> None:
    assert_valid(asyncapi_validate(EXPORTED, tmp_path))


async def test_served_document_passes_asyncapi_validate_and_is_the_exported_one(
    tmp_path: Path,
) -> None:
    # an instance configured like deploy/k8s still serves the one contract document
    settings = Settings(
        kafka_bootstrap_servers="kafka.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="learning-account",
        kafka_sasl_password="secret",
    )
    service = build_service(settings)
    try:
        transport = httpx.ASGITransport(app=service.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            response = await client.get("/asyncapi.json")
    finally:
        await service.redis.aclose()
    assert response.status_code == 200
    served = tmp_path / "served-asyncapi.json"
    served.write_bytes(response.content)

    assert json.loads(response.content) == json.loads(EXPORTED.read_text(encoding="utf-8"))
    assert_valid(asyncapi_validate(served, tmp_path))


def test_asyncapi_validate_fails_on_an_invalid_document(tmp_path: Path) -> None:
    document = json.loads(EXPORTED.read_text(encoding="utf-8"))
    message = next(iter(document["components"]["messages"].values()))
    message["bindings"]["kafka"]["partitionKey"] = "student_id"  # not a Kafka binding field
    broken = tmp_path / "broken-asyncapi.json"
    broken.write_text(json.dumps(document))

    result = asyncapi_validate(broken, tmp_path)

    assert result.returncode != 0, result.stdout + result.stderr
