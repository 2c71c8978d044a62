"""The Redis store by the names its constructors import: `AccountStore` here is `RedisStore`.

The interface the processing speaks to is `processing.store.AccountStore`; the Redis
implementation is `redis_store.RedisStore`, its keys and fields `redis_layout`, its scripts
`lua/`. The entrypoints, ops, tests and benchmarks that build a Redis store import it from here.
"""

from learning_account.adapters.redis_layout import HELD_INDEX_KEY, account_key, outputs_key
from learning_account.adapters.redis_store import RedisStore
from learning_account.adapters.redis_store import RedisStore as AccountStore
from learning_account.processing.store import (
    AccountWrite,
    AppliedStep,
    HeldClaim,
    Identity,
    LoadedAccount,
    content_digest,
    event_digest,
    next_version,
)

__all__ = [
    "HELD_INDEX_KEY",
    "AccountStore",
    "AccountWrite",
    "AppliedStep",
    "HeldClaim",
    "Identity",
    "LoadedAccount",
    "RedisStore",
    "account_key",
    "content_digest",
    "event_digest",
    "next_version",
    "outputs_key",
]
