"""External tools some tests need: skipped where a developer lacks one, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def tool_missing(reason: str) -> NoReturn:
    """`.ci/run` installs every tool the tests use, so in CI a missing one is a broken CI run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, although .ci/run installs it")
    pytest.skip(reason)
