"""Which build runs: the pure Python one, or the one with setup.py's mypyc extensions in place.

The suite passes on both. `LA_EXPECT_BUILD=pure` or `LA_EXPECT_BUILD=compiled` makes the run
check that it is the build it meant to test (a CI job that built the extensions, or one that did
not); unset, the run reports which build it found.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "service"


def compiled_sources() -> list[Path]:
    """The sources setup.py compiles (its `COMPILED` list, read without running setup.py)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED" for target in node.targets
        ):
            return [REPO / path for path in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def module_of(source: Path) -> str:
    return ".".join(source.relative_to(SERVICE).with_suffix("").parts)


def is_extension(module: str) -> bool:
    return not str(importlib.import_module(module).__file__).endswith(".py")


def test_the_compiled_modules_are_sources_of_the_service() -> None:
    sources = compiled_sources()
    assert sources and all(source.is_file() for source in sources)
    assert "learning_account.domain.rules" in {module_of(source) for source in sources}
    # the decorator's run-time side would be unreachable code in a compiled module
    assert "learning_account.domain.values" not in {module_of(source) for source in sources}


def test_the_build_is_all_compiled_or_all_pure_and_the_one_expected(
    capsys: pytest.CaptureFixture[str],
) -> None:
    compiled = {module_of(source): is_extension(module_of(source)) for source in compiled_sources()}
    build = "compiled" if all(compiled.values()) else "pure"
    with capsys.disabled():
        print(f"\n[build] {build}: learning_account.domain.rules from", end=" ")
        print(importlib.import_module("learning_account.domain.rules").__file__)
    partly = sorted(name for name, yes in compiled.items() if yes)
    assert build == "compiled" or not partly, f"only some modules are compiled: {partly}"
    expected = os.environ.get("LA_EXPECT_BUILD")
    if expected is not None:
        assert expected in ("pure", "compiled"), f"LA_EXPECT_BUILD={expected!r}"
        assert build == expected


def test_the_extensions_are_built_from_the_sources_as_they_are() -> None:
    """Extensions built before a .py file last changed run the old code: rebuild (setup.py)."""
    extensions = [
        extension
        for source in compiled_sources()
        for extension in source.parent.glob(f"{source.stem}.*.so")
    ]
    if not extensions:
        return
    built_from = SERVICE / "learning_account" / "compiled_sources.json"
    assert built_from.is_file(), f"{built_from.name} is missing: rebuild (setup.py)"
    digests = json.loads(built_from.read_text(encoding="utf-8"))
    for source in compiled_sources():
        relative = str(source.relative_to(REPO))
        assert digests.get(relative) == hashlib.sha256(source.read_bytes()).hexdigest(), (
            f"the extensions were built from another {relative}: rebuild (setup.py)"
        )


def test_values_of_the_core_behave_the_same_in_both_builds() -> None:
    from learning_account.domain.events import Touched
    from learning_account.domain.model import EventRef, YearTotals

    one = EventRef("s", "1", "t")
    assert one == EventRef("s", "1", "t") and hash(one) == hash(EventRef("s", "1", "t"))
    assert dataclasses.replace(one, id="2") == EventRef("s", "2", "t")
    assert not hasattr(one, "__dict__")
    assert [f.name for f in dataclasses.fields(YearTotals)][-1] == "restored"
    assert Touched(frozenset({1})) | Touched() == Touched(frozenset({1}))
    match one:
        case EventRef(source="s"):
            pass
        case _:
            pytest.fail("a value class matches by its fields")
