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
# Inputs accept up to 2 MiB so that a message over the contract's 1 MiB limit reaches the
# service and is dead-lettered instead of being refused unseen by the broker.
INPUT_MAX_BYTES=2097152
OUTPUT_MAX_BYTES=1048588             # the broker default

# Inputs are stamped by the broker's clock: the service merges the three topics by record time
# and times held results in it (contracts.md "Order"); producer clocks may be skewed.
INPUT_TIMESTAMP_TYPE=LogAppendTime
OUTPUT_TIMESTAMP_TYPE=CreateTime     # the broker default

# create TOPIC PARTITIONS RETENTION_MS MAX_MESSAGE_BYTES TIMESTAMP_TYPE
create() {
    topic="$1" partitions="$2" retention_ms="$3" max_message_bytes="$4" timestamp_type="$5"
    echo "creating ${topic}: ${partitions} partitions, retention.ms=${retention_ms}"
    # ${COMMAND_CONFIG:+...} adds the option only when a properties file is given
    "${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" \
        ${COMMAND_CONFIG:+--command-config "${COMMAND_CONFIG}"} \
        --create --if-not-exists --topic "${topic}" \
        --partitions "${partitions}" --replication-factor "${REPLICATION_FACTOR}" \
        --config cleanup.policy=delete \
        --config retention.ms="${retention_ms}" \
        --config min.insync.replicas="${MIN_INSYNC_REPLICAS}" \
        --config max.message.bytes="${max_message_bytes}" \
        --config message.timestamp.type="${timestamp_type}"
}

# Input topics: one consumer group reads all three; replicas beyond INPUT_PARTITIONS idle.
# They must have the same partition count (co-partitioned): the service refuses to run if not.
create learning-account.registrations.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" "${INPUT_TIMESTAMP_TYPE}"
create learning-account.exam-results.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" "${INPUT_TIMESTAMP_TYPE}"
create learning-account.deregistrations.v1 "${INPUT_PARTITIONS}" "${INPUT_RETENTION_MS}" "${INPUT_MAX_BYTES}" "${INPUT_TIMESTAMP_TYPE}"

# Output topics, keyed by student id.
create learning-account.balance-changed.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}" "${OUTPUT_TIMESTAMP_TYPE}"
create learning-account.credit-exhausted.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}" "${OUTPUT_TIMESTAMP_TYPE}"
create learning-account.credit-low.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}" "${OUTPUT_TIMESTAMP_TYPE}"
create learning-account.rejections.v1 "${OUTPUT_PARTITIONS}" "${OUTPUT_RETENTION_MS}" "${OUTPUT_MAX_BYTES}" "${OUTPUT_TIMESTAMP_TYPE}"

# Dead letters: few, and each one needs a human, so keep them long.
create learning-account.dead-letter.v1 "${OUTPUT_PARTITIONS}" "${DEAD_LETTER_RETENTION_MS}" "${OUTPUT_MAX_BYTES}" "${OUTPUT_TIMESTAMP_TYPE}"

echo "topics:"
"${KAFKA_BIN}/kafka-topics.sh" --bootstrap-server "${BOOTSTRAP_SERVERS}" \
    ${COMMAND_CONFIG:+--command-config "$COMMAND_CONFIG"} --list
