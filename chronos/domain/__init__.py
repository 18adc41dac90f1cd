"""The ledger's domain: commands, events, rules and rejections.

Pure Python: nothing here imports grpc, protobuf, psycopg, confluent_kafka or
elasticsearch (tests/unit/test_architecture.py checks it).
"""
