class ChronosError(Exception):
    """Root of every error Chronos raises."""
