"""Who may call the ledger: caller identity, token verification and issue, scopes, TLS.

``caller`` is the identity a verified token gives a call, ``scopes`` the fixed scope
names (a public contract), ``tokens`` the minting of tokens signed with a local key and
``cli`` its ``chronos token issue``, ``config`` the settings both gRPC servers read.
``keys`` finds the public keys (a JWKS file or an OIDC issuer), ``verify`` checks a
token with them, ``rate_limit`` bounds each principal's calls, and ``authentication``
puts the three together for every call; ``tls`` serves the certificate files. The
domain never imports this package: a command carries the caller's ids as plain strings
(``chronos.event_store.context``).
"""
