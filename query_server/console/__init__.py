"""The ledger console: a read-only web page over QueryService (``python -m query_server.console``).

It is a client of the query server like any other (TLS, a bearer token with the
``ledger:read`` scope), serves HTTP on a loopback address only, and has no write action.
"""
