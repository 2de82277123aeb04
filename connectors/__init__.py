"""Connections between Segmenter's Kafka topics and systems outside Kafka.

- `connectors.redis_view`: the Redis read model kept from `segment-changes`.
- `connectors.webhooks`: HTTP webhooks for matching segment changes (signed, ordered, retried).
- `connectors.ingest`: the HTTP ingest endpoint (`POST /v1/events`).
- `connectors.importer`: bulk import of JSONL/CSV files.

See docs/connectors.md and docs/redis.md.
"""
