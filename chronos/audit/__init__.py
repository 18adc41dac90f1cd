"""The audit trail: the events' hash chain, its verification and its signed checkpoints."""
