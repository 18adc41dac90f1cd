"""Who may call the ledger: caller identity, token verification and issue, scopes, TLS.

``caller`` is the identity a verified token gives a call, ``scopes`` the fixed scope
names (a public contract), ``tokens`` the minting of tokens signed with a local key,
``config`` the settings both gRPC servers read. The domain never imports this package:
a command carries the caller's ids as plain strings (``chronos.event_store.context``).
"""
