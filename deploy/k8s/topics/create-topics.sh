#!/bin/sh
# Creates every Kafka topic of shared/spec/contracts.md, idempotently (--if-not-exists).
# Used by deploy/docker-compose.yml (service `topics`) and by the Kubernetes Job in this
# directory. Environment:
#   BOOTSTRAP_SERVERS    broker list                     (default kafka:19092)
#   REPLICATION_FACTOR   per topic                       (default 1; use 3 in production)
#   MIN_INSYNC_REPLICAS  per topic                       (default 1; use 2 in production)
#   INPUT_PARTITIONS     the three input topics          (default 6; caps useful replicas)
#   OUTPUT_PARTITIONS    the output topics               (default 6)
#   COMMAND_CONFIG       optional admin client properties file (SASL/TLS)
#   KAFKA_BIN            directory of kafka-topics.sh    (default /opt/kafka/bin)
set -eu

BOOTSTRAP_SERVERS="${BOOTSTRAP_SERVERS:-kafka:19092}"
REPLICATION_FACTOR="${REPLICATION_FACTOR:-1}"
MIN_INSYNC_REPLICAS="${MIN_INSYNC_REPLICAS:-1}"
INPUT_PARTITIONS="${INPUT_PARTITIONS:-6}"
OUTPUT_PARTITIONS="${OUTPUT_PARTITIONS:-6}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"

# Literal milliseconds (no shell arithmetic: 365 days overflows 32-bit shells).
INPUT_RETENTION_MS=31536000000       # 365 days: the institutions' events, to replay or audit
OUTPUT_RETENTION_MS=2592000000       # 30 days: downstream consumers deduplicate on `id`
DEAD_LETTER_RETENTION_MS=31536000000 # 365 days: each dead letter needs a human to look at it
FOREVER_MS=-1                        # account snapshots: the record of accounts past the inputs' retention
OUTBOX_SNAPSHOT_RETENTION_MS=691200000 # 8 days: longer than LA_OUTBOX_RETENTION_SECONDS (7 days)
# Inputs accept up to 2 MiB so that a message over the contract's 1 MiB limit reaches the
# service and is dead-lettered instead of being refused unseen by the broker.
INPUT_MAX_BYTES=2097152
OUTPUT_MAX_BYTES=1048588             # the broker default

# Inputs are stamped by the broker's clock: the service merges the three topics by record time
# and times held results in it (contracts.md "Order"); producer clocks may be skewed.
INPUT_TIMESTAMP_TYPE=LogAppendTime

# create TOPIC PARTITIONS RETENTION_MS MAX_MESSAGE_BYTES [CLEANUP_POLICY] [TIMESTAMP_TYPE]
create() {
    topic="$1" partitions="$2" retention_ms="$3" max_message_bytes="$4" cleanup="${5:-delete}"
    timestamp_type="${6:-CreateTime}"
    echo "creating ${topic}: ${partitions} partitions, retention.ms=${retention_ms}, ${cleanup}"
    # ${COMMAND_CONFIG:+...} adds the option only when a properties file is given
    "${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" \
        ${COMMAND_CONFIG:+--command-config "${COMMAND_CONFIG}"} \
        --create --if-not-exists --topic "${topic}" \
        --partitions "${partitions}" --replication-factor "${REPLICATION_FACTOR}" \
        --config cleanup.policy="${cleanup}" \
        --config retention.ms="${retention_ms}" \
        --config min.insync.replicas="${MIN_INSYNC_REPLICAS}" \
        --config max.message.bytes="${max_message_bytes}" \
        --config message.timestamp.type="${timestamp_type}"
}

# Input topics: one consumer group reads all three; replicas beyond INPUT_PARTITIONS idle.
# They must have the same partition count (co-partitioned): the service refuses to run if not.
create learning-account.registrations.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" delete "${INPUT_TIMESTAMP_TYPE}"
create learning-account.exam-results.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" delete "${INPUT_TIMESTAMP_TYPE}"
create learning-account.deregistrations.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" delete "${INPUT_TIMESTAMP_TYPE}"

# Output topics, keyed by student id.
create learning-account.balance-changed.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"
create learning-account.credit-exhausted.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"
create learning-account.credit-low.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"
create learning-account.rejections.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"

# Dead letters: few, and each one needs a human, so keep them long.
create learning-account.dead-letter.v1 "${OUTPUT_PARTITIONS}" "${DEAD_LETTER_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"

# Snapshots (README, "Replay and recovery"): each account's last stored state, kept forever by
# compaction, and each step's stored outputs for as long as the outbox keeps them, so
# `learning-account restore` recovers accounts older than the input topics' retention.
create learning-account.account-snapshots.v1 "${OUTPUT_PARTITIONS}" "${FOREVER_MS}" "${OUTPUT_MAX_BYTES}" compact
create learning-account.outbox-snapshots.v1 "${OUTPUT_PARTITIONS}" "${OUTBOX_SNAPSHOT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}"

echo "topics:"
"${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" \
    ${COMMAND_CONFIG:+--command-config "$COMMAND_CONFIG"} --list
