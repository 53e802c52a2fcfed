"""MQTT -> database ingest: validation, batching, idempotent writes, ack watermarks."""
