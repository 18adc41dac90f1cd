"""Limits on everything a client can send. Documented in docs/api.md."""

REQUEST_ID_LENGTH_MAX = 128
OWNER_NAME_LENGTH_MAX = 200
DESCRIPTION_LENGTH_MAX = 500
REASON_LENGTH_MAX = 500
METADATA_ENTRIES_MAX = 32
METADATA_KEY_LENGTH_MAX = 64
METADATA_VALUE_LENGTH_MAX = 512
JOURNAL_LINES_MAX = 64
# The longest a hold may wait for its post or void: a reservation left for longer is a
# liability nobody is watching, not a card authorization (those last days to weeks).
PENDING_TIMEOUT_SECONDS_MAX = 366 * 86_400
# Commands in one ExecuteBatch call, and journal-entry lines over all of them: big enough
# to amortize a round trip, small enough that the answer of a batch that committed fits
# a client's default 4 MB receive limit (each line answers a balance and an event id,
# about 92 bytes: 1,000 entries of 64 lines answered 5.9 MB, so the client got
# RESOURCE_EXHAUSTED for money that had moved, and again on every retry). 10,000 lines
# and 1,000 commands answer at most about 1.3 MB.
BATCH_COMMANDS_MAX = 1000
BATCH_JOURNAL_LINES_MAX = 10_000

# Balances and amounts are signed 64-bit integers of minor units on the wire and in
# PostgreSQL (bigint); the ledger refuses anything that would leave that range.
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
