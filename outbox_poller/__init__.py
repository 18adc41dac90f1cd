"""The outbox poller: relays committed outbox rows to Kafka, in position order."""
