"""The Lua scripts of the Redis store, composed from the `.lua` files beside this module.

A script is the size constants, the helpers, one student's function, and the call: once per
student (`checked_one`, a Redis Cluster) or once for the whole batch (`for_each_student`, a
single Redis). Both check every student before their first write. The commit runs as a script
on a Redis Cluster only: a single Redis commits with MULTI/EXEC (`redis_store._commit_chunk`),
and loads with plain HMGETs everywhere.
"""

from __future__ import annotations

from importlib import resources

from learning_account.processing.store import CONTENT_DIGEST_BYTES, DIGEST_BYTES

ENTRY_BYTES = DIGEST_BYTES + CONTENT_DIGEST_BYTES
"""An applied event in the account's `k` list: its digest, then its content digest."""
BUCKET_ENTRIES = 64
"""The most entries a list of applied events holds (768 bytes) before it splits in 16 by the
next hex digit of their digests (`redis_layout.leaf`): four years of a student's events (41 to
58 in bench/) stay in one field."""
BUCKET_DEPTH = 4
"""The longest digest prefix a list is named by (`k:0a3f`); one so deep never splits."""
SPLIT = b"/"
"""The value of a list that has split: not a whole number of entries, so never a list."""


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _script(*files: str, call: str) -> str:
    sizes = (
        f"local DIGEST, ENTRY = {DIGEST_BYTES}, {ENTRY_BYTES}\n"
        f"local BUCKET_ENTRIES, BUCKET_DEPTH, SPLIT = {BUCKET_ENTRIES}, {BUCKET_DEPTH},"
        f" '{SPLIT.decode()}'\n"
    )
    return sizes + "".join(_read(name) for name in files) + f"return {call}\n"


_ONE = "checked_one"
_MANY = "for_each_student"
COMMIT_SCRIPT = _script("helpers", "commit_one", _ONE, call="checked_one(commit_one, check_commit)")
SETTLE_SCRIPT = _script("helpers", "settle_one", _ONE, call="checked_one(settle_one, check_settle)")
SETTLE_MANY_SCRIPT = _script(
    "helpers", "settle_one", _MANY, call="for_each_student(settle_one, check_settle, true)"
)
RELEASE_CLAIM_SCRIPT = _read("release_claim")

SCRIPTS = (
    COMMIT_SCRIPT,
    SETTLE_SCRIPT,
    SETTLE_MANY_SCRIPT,
    RELEASE_CLAIM_SCRIPT,
)
