"""What every phase of the benchmark shares: where it lives, the partitions and topics it uses,
and how it reports progress."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from learning_account.settings import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_DIR = HERE / "results"
PARTITIONS = 3
NAIVE_OUT = "bench.naive-out.v1"
CEILING_OUT = "bench.ceiling-out.v1"
LIBRDKAFKA_OUT = "bench.librdkafka-out.v1"
REFERENCE_TOPICS = (NAIVE_OUT, CEILING_OUT, LIBRDKAFKA_OUT)
DEFAULT_BATCH_MAX_RECORDS: int = Settings.model_fields["batch_max_records"].default
"""This tree's service's default batch size (`LA_BATCH_MAX_RECORDS`)."""


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
