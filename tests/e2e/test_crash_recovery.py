"""Nothing lost, nothing doubled, through real crashes.

The four services run as real processes against real PostgreSQL, Kafka and
Elasticsearch while the load test sends transfers (a share of them sent twice with the
same request_id), or, in the second run, holds (posted, partly posted, voided, raced and
left to the command server's expiry job) and reversals, with duplicates. Meanwhile the
outbox poller, the projector and the command server are each killed with SIGKILL (no
drain, no flush, no offset commit, a group commit cut off mid-transaction) and started
again. The load test's own invariant checks then have to
pass: each currency conserved, no balance below its limit, every accepted request's
events present exactly once (and a request whose answer was lost to the crash at most
once), the projection equal to a recompute from the events, and `chronos reconcile`
finding no drift; with holds also every hold ended exactly once (each one whose timeout
passed ended by then, the expiry job surviving its server's crash), every entry reversed
at most once, and the pending index equal to the write side; and `chronos verify` finding
the hash chain intact. Timings are sequencing only, never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chronos.read_model.client import elasticsearch_client
from tests.e2e.helpers import RestartableService, pipeline_env, run_loadtest
from tests.integration.chain_support import write_checkpoint_keys

# Load-test seconds (after its setup) at which each service is killed, and how long it
# stays down.
KILLS = (("outbox_poller", 4.0, 1.5), ("projector", 8.0, 1.5), ("command_server", 12.0, 0.5))
TRANSFER_SECONDS = 20
SETUP_SECONDS = 3.0
# The holds run waits for its holds' expiry: a short job interval keeps that wait short.
HOLD_EXPIRY_INTERVAL_SECONDS = "0.5"


@pytest.mark.parametrize(
    ("scenario", "arguments"),
    [
        pytest.param("duplicates", ["--rate", "60", "--duplicate-fraction", "0.3"], id="transfers"),
        # A holds operation sends two to four commands: a lower rate loads the servers
        # about as much.
        pytest.param(
            "holds",
            ["--rate", "25", "--duplicate-fraction", "0.3", "--hold-timeout-seconds", "2"],
            id="holds",
        ),
    ],
)
def test_killed_services_lose_nothing_and_double_nothing(
    pg_dsn: str,
    kafka_bootstrap: str,
    es_url: str,
    tmp_path: Path,
    scenario: str,
    arguments: list[str],
) -> None:
    with pipeline_env(pg_dsn, kafka_bootstrap, es_url, "crash-e2e") as pipeline:
        # The poller's leader signs checkpoints of the hash chain (a new one after each
        # restart); the projector archives them; verify checks the chain against them.
        key_file, jwks_file = write_checkpoint_keys(tmp_path)
        pipeline.env.update(
            {
                "CHRONOS_CHECKPOINT_SIGNING_KEY_FILE": str(key_file),
                "CHRONOS_CHECKPOINT_JWKS_FILE": str(jwks_file),
                "CHRONOS_CHECKPOINT_INTERVAL_SECONDS": "1",
            }
        )
        services = {
            "command_server": RestartableService(
                "command_server",
                {
                    **pipeline.env,
                    "CHRONOS_HOLD_EXPIRY_INTERVAL_SECONDS": HOLD_EXPIRY_INTERVAL_SECONDS,
                },
                tmp_path / "command_server.log",
                grpc_address=pipeline.command_addr,
            ),
            "outbox_poller": RestartableService(
                "outbox_poller", pipeline.env, tmp_path / "outbox_poller.log"
            ),
            "projector": RestartableService("projector", pipeline.env, tmp_path / "projector.log"),
            "query_server": RestartableService(
                "query_server",
                pipeline.env,
                tmp_path / "query_server.log",
                grpc_address=pipeline.query_addr,
            ),
        }
        for service in services.values():
            service.start()
        failures: list[BaseException] = []

        def crash_and_restart() -> None:
            try:
                started = time.monotonic() + SETUP_SECONDS
                for module, at_seconds, down_seconds in KILLS:
                    time.sleep(max(0.0, started + at_seconds - time.monotonic()))
                    services[module].kill()
                    time.sleep(down_seconds)
                    services[module].start()
            except BaseException as error:  # reported by the test thread
                failures.append(error)

        chaos = threading.Thread(target=crash_and_restart, name="chaos")
        try:
            chaos.start()
            status, output = run_loadtest(
                pipeline,
                tmp_path / "result",
                scenario,
                *arguments,
                "--duration-seconds",
                str(TRANSFER_SECONDS),
                "--concurrency",
                "16",
                "--accounts",
                "30",
                "--seed",
                "11",
                # Calls in flight at the command server's kill fail fast and count as
                # outcomes unknown; the reconnect after it takes a few seconds.
                "--rpc-timeout-seconds",
                "5",
                "--lag-sample-fraction",
                "0",
                "--no-plot",
                timeout_seconds=300,
            )
            chaos.join(timeout=60)
        finally:
            for service in services.values():
                service.stop()
        with elasticsearch_client(es_url) as es:
            es.indices.refresh(index=f"{pipeline.index_prefix}-checkpoints")
            archived_checkpoints = es.count(index=f"{pipeline.index_prefix}-checkpoints")["count"]
        # The hash chain survived the command server's SIGKILL mid group commit: gapless
        # and correct, as `chronos verify` recomputes it.
        verified = subprocess.run(
            [sys.executable, "-m", "chronos.cli", "verify", "--no-progress"],
            env={**os.environ, **pipeline.env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("chain intact: positions 1.."), verified.stdout
    agreeing = re.search(r"(\d+) signed checkpoints agree", verified.stdout)
    assert agreeing is not None and int(agreeing.group(1)) >= 2, verified.stdout
    assert archived_checkpoints >= int(agreeing.group(1)), "the projector archived them"
    assert not failures, failures
    assert [services[module].starts for module, _, _ in KILLS] == [2, 2, 2]
    assert status == 0, output
    assert "invariants: all checks passed" in output
    result = json.loads((tmp_path / "result" / "result.json").read_text())
    assert result["invariants"]["passed"] is True
    assert all(check["passed"] for check in result["invariants"]["checks"])
    requests = result["requests"]
    assert requests["accepted"] > 0
    assert requests["replay_mismatches"] == 0
    if scenario == "holds":
        print(output)  # the figures, for a run with -s; never asserted
        names = [check["name"] for check in result["invariants"]["checks"]]
        assert names[-2:] == ["every hold ends exactly once", "every entry reversed at most once"]
        assert requests["races"]["hold"] > 0
        assert requests["race_violations"] == {}
