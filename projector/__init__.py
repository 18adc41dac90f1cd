"""The projector process: keeps the Elasticsearch read model up to date from Kafka."""
