"""The layers stay apart: the runtime never imports the dev tools, and the rules core is pure.

Every import statement counts, wherever it stands: at the top, inside a function, or under
``if TYPE_CHECKING:``; so does ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
RUNTIME = SERVICE / "learning_account"
DOMAIN = RUNTIME / "domain"
DEV_PACKAGE = "learning_account_dev"


def module_name(path: Path, service: Path) -> str:
    parts = path.relative_to(service).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, service: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file below the folder ``service``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, service)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from learning_account import domain` names a module
                yield node.lineno, f"{name}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def top_level(name: str) -> str:
    return name.split(".")[0]


def dev_imports(root: Path, service: Path = SERVICE) -> list[str]:
    """Imports of the dev tools in the files below ``root``."""
    return [
        f"{path.relative_to(service)}:{line}: {name}"
        for path in sorted(root.rglob("*.py"))
        for line, name in imported_modules(path, service)
        if top_level(name) == DEV_PACKAGE
    ]


def impure_imports(root: Path, service: Path = SERVICE) -> list[str]:
    """Imports of the files below ``root`` that are neither ``root`` nor the standard library."""
    core = module_name(root / "__init__.py", service)
    return [
        f"{path.relative_to(service)}:{line}: {name}"
        for path in sorted(root.rglob("*.py"))
        for line, name in imported_modules(path, service)
        if not (
            name == core
            or name.startswith(core + ".")
            or top_level(name) in sys.stdlib_module_names
            or name.startswith("__future__")
        )
        # `from learning_account.domain import x` yields the package too: that is the domain
        and not core.startswith(name + ".")
    ]


def test_the_runtime_never_imports_the_dev_tools() -> None:
    assert dev_imports(RUNTIME) == []


def test_the_domain_imports_only_itself_and_the_standard_library() -> None:
    assert impure_imports(DOMAIN) == []


@pytest.mark.parametrize(
    "source",
    [
        "from learning_account_dev import events\n",
        "import learning_account_dev.devstack\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from learning_account_dev.devstack import DevStack\n",
        "def later():\n    from learning_account_dev.testing import caused_by\n",
        "import importlib\nimportlib.import_module('learning_account_dev.commands')\n",
    ],
)
def test_a_dev_import_anywhere_in_the_runtime_is_found(tmp_path: Path, source: str) -> None:
    package = tmp_path / "learning_account" / "entrypoints"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "bad.py").write_text(source)
    assert dev_imports(tmp_path / "learning_account", tmp_path) != []


@pytest.mark.parametrize(
    ("source", "pure"),
    [
        ("from learning_account.wire import decode\n", False),
        ("import redis\n", False),
        ("from pydantic import BaseModel\n", False),
        ("from ..adapters import store\n", False),
        ("from learning_account import settings\n", False),
        ("from learning_account.domain.model import Policy\n", True),
        ("from .model import Policy\n", True),
        ("from learning_account.domain import model\n", True),
        ("from datetime import date\nimport zoneinfo\n", True),
    ],
)
def test_an_import_from_outside_the_domain_is_found(
    tmp_path: Path, source: str, pure: bool
) -> None:
    domain = tmp_path / "learning_account" / "domain"
    domain.mkdir(parents=True)
    (domain / "__init__.py").write_text("")
    (domain / "rules.py").write_text(source)
    assert (impure_imports(domain, tmp_path) == []) is pure
