"""The command service: the ledger's gRPC write path (``chronos.v1.CommandService``)."""
