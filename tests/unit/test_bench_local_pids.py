"""Which servers given by address the bench looks for on this machine."""

from __future__ import annotations

from chronos_dev.bench.local_pids import server_ports
from chronos_dev.bench.resources import Infrastructure


def test_loopback_servers_give_their_ports() -> None:
    infrastructure = Infrastructure(
        pg_server_dsn="postgresql://postgres@127.0.0.1:36309/chronos",
        kafka_bootstrap="localhost:41433,localhost:41434",
        es_url="http://[::1]:9200",
    )

    assert server_ports(infrastructure) == {
        "postgres": 36309,
        "kafka": 41433,
        "elasticsearch": 9200,
    }


def test_remote_servers_are_not_looked_for() -> None:
    infrastructure = Infrastructure(
        pg_server_dsn="host=db.internal port=5432 dbname=chronos",
        kafka_bootstrap="kafka.internal:9092",
        es_url="http://search.internal:9200",
    )

    assert server_ports(infrastructure) == {}


def test_postgres_without_a_port_uses_the_default() -> None:
    infrastructure = Infrastructure(
        pg_server_dsn="host=localhost dbname=chronos",
        kafka_bootstrap="10.0.0.5:9092",
        es_url="https://10.0.0.6:9200",
    )

    assert server_ports(infrastructure) == {"postgres": 5432}
