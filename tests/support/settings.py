"""Settings as a command reads them, from `LA_*` variables given by their names without `LA_`."""

from __future__ import annotations

from learning_account.settings import Settings


def from_env(**env: str) -> Settings:
    """`Settings.from_env` of `LA_<name>=value` for each keyword."""
    return Settings.from_env({f"LA_{name}": value for name, value in env.items()})
