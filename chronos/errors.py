"""The root of Chronos's exceptions: adapters translate driver errors into its subclasses,
so no psycopg, Kafka or Elasticsearch exception crosses into the domain or out to a
client."""


class ChronosError(Exception):
    """Root of every error Chronos raises."""
