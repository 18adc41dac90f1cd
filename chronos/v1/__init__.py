"""Generated protobuf and gRPC code for package ``chronos.v1``.

Everything in this package except this file is generated from ``protos/`` by
``python -m chronos.codegen`` (run by ``scripts/setup``) and is git-ignored.
Do not edit it by hand.
"""
