"""The commands' event loop: uvloop's where uvloop is installed, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from learning_account import runtime


async def loop_kind() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_the_commands_run_on_uvloop() -> None:
    assert issubclass(runtime.run(loop_kind()), uvloop.Loop)


def test_without_uvloop_they_run_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    kind = runtime.run(loop_kind())
    assert not issubclass(kind, uvloop.Loop)
    assert issubclass(kind, asyncio.BaseEventLoop)
