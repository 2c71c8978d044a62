"""`python -m learning_account`: the `learning-account` command."""

from learning_account.entrypoints.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
