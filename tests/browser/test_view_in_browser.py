"""The account page in a real headless Chromium, at phone size, over a real HTTP server.

Mary, Thomas and a student halfway through a year go through the real pipeline into a real
Redis; the Starlette app runs under uvicorn on a free port (token protected, the browser passes
it as `?token=`); Chromium renders the page, we read its DOM (`--dump-dom`) and keep a screenshot
in tests/artifacts/.
Skipped only when no chromium binary is installed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import uvicorn
from redis.asyncio import Redis

from learning_account.adapters.redis_store import RedisStore
from learning_account.entrypoints.http_api import create_http_app
from learning_account.observability.metrics import Metrics
from learning_account_dev import events as ev
from learning_account_dev.devstack import free_port
from support.apply import apply
from support.tools import tool_missing

from .page import AccountPage, parse_account_page

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "browser-s3cret"
PHONE = "412,1200"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OCTOBER_2019 = date(2019, 10, 1)  # "today" of the projection: the page does not age
# a year passed, then 2019-2020 under way: one unit passed, three still without a result
INES = [
    ev.registration("ines", 2018, ev.package("P", 10, 6)),
    *(ev.exam_result("ines", 2018, f"P{i:02d}") for i in range(1, 11)),
    ev.registration("ines", 2019, {"STAT1": 6, "PSY2": 4, "LAB": 3.5, "ETH": 6}),
    ev.exam_result("ines", 2019, "ETH"),
]


async def always_ready() -> bool:
    return True


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    tool_missing("no chromium binary on PATH (apt-get install chromium)")


@dataclass
class Served:
    base_url: str

    def view_url(self, student_id: str) -> str:
        return f"{self.base_url}/accounts/{student_id}/view?token={TOKEN}"


@pytest.fixture
def chromium() -> str:
    return chromium_binary()


@pytest.fixture
async def served(redis_client: Redis, redis_url: str) -> AsyncIterator[Served]:
    """Mary, Thomas and Ines in Redis (db 0), the read API under uvicorn in a thread."""
    await apply(redis_client, ev.mary_track("mary"))
    await apply(redis_client, ev.thomas_track("thomas"))
    await apply(redis_client, INES)
    with _uvicorn_thread(redis_url) as base_url:
        yield Served(base_url)


class _ThreadServer:
    """uvicorn in its own thread and event loop (its own Redis client, bound to that loop)."""

    def __init__(self, redis_url: str, port: int) -> None:
        self.redis_url = redis_url
        self.port = port
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by the test thread
            self.error = error

    async def _serve(self) -> None:
        redis = Redis.from_url(self.redis_url)
        try:
            app = create_http_app(
                RedisStore(redis),
                ready=always_ready,
                metrics=Metrics(),
                token=TOKEN,
                today=lambda: OCTOBER_2019,
            )
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
            self.server = uvicorn.Server(config)
            await self.server.serve()
        finally:
            await redis.aclose()


@contextmanager
def _uvicorn_thread(redis_url: str) -> Iterator[str]:
    """Serve the app on a free port until the block ends; yields the base URL."""
    runner = _ThreadServer(redis_url, free_port())
    thread = threading.Thread(target=runner.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not (runner.server is not None and runner.server.started):
            assert thread.is_alive(), f"uvicorn stopped before serving: {runner.error!r}"
            assert time.monotonic() < deadline, "uvicorn did not start within 15 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{runner.port}"
    finally:
        if runner.server is not None:
            runner.server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"
        assert runner.error is None, repr(runner.error)


@pytest.fixture
def profile_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as directory:
        yield Path(directory)


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={PHONE}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


async def render(chromium: str, profile: Path, url: str, screenshot: Path) -> AccountPage:
    """The page as Chromium renders it (DOM after layout), and its screenshot at phone size."""

    def run() -> str:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.unlink(missing_ok=True)  # the assertions must see this run's picture
        dom = _chromium(chromium, profile, "--dump-dom", url)
        _chromium(chromium, profile, f"--screenshot={screenshot}", url)
        return dom.stdout.decode()

    return parse_account_page(await asyncio.to_thread(run))


def assert_real_png(path: Path) -> None:
    assert path.is_file(), f"no screenshot at {path}"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), "not a PNG"
    assert len(data) > 5 * 1024, f"screenshot of {len(data)} bytes: blank page?"


async def test_mary_in_a_phone_browser(chromium: str, served: Served, profile_dir: Path) -> None:
    screenshot = ARTIFACTS / "view-mary.png"
    page = await render(chromium, profile_dir, served.view_url("mary"), screenshot)
    assert page.h1 == "Learning account of mary"
    assert page.text_of("balance") == "200"
    assert page.text_of("bonus-granted") == "60"
    assert page.years == ["2016-2017", "2017-2018", "2018-2019"]
    assert page.row("Start") == ["140", "200", "200"]
    assert page.row("Credits invested") == ["-60", "-60", "-60"]
    assert page.row("Credits acquired") == ["+60", "+60", "+60"]
    assert page.row("Bonus") == ["+60", "", ""]
    assert page.row("Balance") == ["200", "200", "200"]
    assert len(page.year_points) == 3
    assert_real_png(screenshot)


async def test_thomas_in_a_phone_browser(chromium: str, served: Served, profile_dir: Path) -> None:
    screenshot = ARTIFACTS / "view-thomas.png"
    page = await render(chromium, profile_dir, served.view_url("thomas"), screenshot)
    assert page.text_of("balance") == "140"
    assert page.years == ["2016-2017", "2017-2018", "2018-2019", "2019-2020"]
    assert page.row("Start") == ["140", "152", "155", "140"]
    assert page.row("Credits invested") == ["-60", "-63", "-60", "-57"]
    assert page.row("Credits acquired") == ["+36", "+42", "+45", "+57"]
    assert page.row("Bonus") == ["+36", "+24", "", ""]
    assert page.row("Balance") == ["152", "155", "140", "140"]
    assert [p.attrs["data-balance"] for p in page.year_points] == ["152", "155", "140", "140"]
    assert_real_png(screenshot)


async def test_what_if_in_a_phone_browser(chromium: str, served: Served, profile_dir: Path) -> None:
    screenshot = ARTIFACTS / "view-what-if.png"
    page = await render(chromium, profile_dir, served.view_url("ines"), screenshot)
    assert page.text_of("balance") == "186.5"  # 200, 19.5 invested, ETH passed (+6)
    assert page.text_of("what-if-title") == "What if: course units of 2019-2020 without a result"
    assert page.table("what-if") == [
        ["Unit", "Credits", "If passed", "If failed"],
        ["LAB", "3.5", "190", "186.5"],  # no bonus: the first 60 were in 2018-2019
        ["PSY2", "4", "190.5", "186.5"],
        ["STAT1", "6", "192.5", "186.5"],
    ]
    assert page.scripts == 0
    assert_real_png(screenshot)


async def test_browser_without_the_token_sees_no_account(
    chromium: str, served: Served, profile_dir: Path
) -> None:
    url = f"{served.base_url}/accounts/mary/view"
    dom = await asyncio.to_thread(_chromium, chromium, profile_dir, "--dump-dom", url)
    text = dom.stdout.decode()
    assert "missing or wrong bearer token" in text
    assert "balance" not in parse_account_page(text).by_id
