"""Subcommands that other packages add to `learning-account`, through entry points.

The group is `learning_account.commands`; the dev tools (``learning_account_dev``) add ``dev``
and ``demo`` this way, so the runtime never imports them. Where the distribution declares a
command whose package is not installed (the container image holds only the service), the
command says how to get it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from learning_account.settings import Settings

GROUP = "learning_account.commands"


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, its arguments and what it runs (returning the exit status)."""

    help: str
    run: Callable[[Settings, argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    json_logs: bool = False  # log JSON lines, as `serve` does


def plugin_commands() -> dict[str, Command]:
    """The commands of the entry point group, by name."""
    return {entry.name: _load(entry) for entry in entry_points(group=GROUP)}


def _load(entry: EntryPoint) -> Command:
    try:
        command = entry.load()
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != entry.module.split(".")[0]:
            raise  # the command's package is there, something it imports is not
        return _not_installed(entry)
    if not isinstance(command, Command):
        raise TypeError(f"entry point {entry.value} of {GROUP} is not a Command")
    return command


def _not_installed(entry: EntryPoint) -> Command:
    package = entry.module.split(".")[0]

    def run(settings: Settings, args: argparse.Namespace) -> int:
        print(
            f"learning-account {entry.name} is a dev tool ({package}), not in this install:"
            " install the project with its `dev` extra (pip install -e '.[dev]')",
            file=sys.stderr,
        )
        return 2

    return Command(help=f"not installed here (a dev tool of {package})", run=run)
