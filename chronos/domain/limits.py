"""Limits on everything a client can send. Documented in the README's API section."""

REQUEST_ID_LENGTH_MAX = 128
OWNER_NAME_LENGTH_MAX = 200
DESCRIPTION_LENGTH_MAX = 500
REASON_LENGTH_MAX = 500
METADATA_ENTRIES_MAX = 32
METADATA_KEY_LENGTH_MAX = 64
METADATA_VALUE_LENGTH_MAX = 512
JOURNAL_LINES_MAX = 64
# Commands in one ExecuteBatch call: big enough to amortize a round trip, small enough
# that one call's answer stays well under gRPC's default 4 MB message limit.
BATCH_COMMANDS_MAX = 1000

# Balances and amounts are signed 64-bit integers of minor units on the wire and in
# PostgreSQL (bigint); the ledger refuses anything that would leave that range.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
