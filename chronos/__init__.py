"""Chronos: an event-sourced core-banking ledger."""
