"""The Kafka contract between the outbox poller (producer) and the projector (consumer)."""
