"""The local stack's state file and settings, without starting a server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chronos_dev.stack import InfraError
from chronos_dev.stack.elasticsearch import NICE_DEFAULT, nice_level
from chronos_dev.stack.state import LAYOUT_VERSION, ServerRecord, StackState, StateFile


def test_the_state_round_trips(tmp_path: Path) -> None:
    state_file = StateFile(tmp_path)
    assert state_file.load() == StackState()
    record = ServerRecord(ports={"port": 5432}, pid=os.getpid(), log_path="/x.log")
    with state_file.lock():
        state_file.save(StackState(servers={"postgres": record}))
    assert state_file.load() == StackState(servers={"postgres": record})
    assert state_file.recorded_pids() == [os.getpid()]
    # A record without the process's start time never counts as running.
    assert not record.is_running()


def test_another_layout_is_refused_with_a_hint_to_purge(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"layout_version": LAYOUT_VERSION + 1}))
    with pytest.raises(InfraError, match="chronos-dev infra down --purge"):
        StateFile(tmp_path).load()
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InfraError, match="cannot read"):
        StateFile(tmp_path).load()
    assert StateFile(tmp_path).recorded_pids() == []


@pytest.mark.parametrize(
    ("raw", "level"), [(None, NICE_DEFAULT), ("", NICE_DEFAULT), ("0", 0), ("19", 19)]
)
def test_the_elasticsearch_nice_level(raw: str | None, level: int) -> None:
    assert nice_level(raw) == level


@pytest.mark.parametrize("raw", ["-1", "20", "ten"])
def test_a_bad_nice_level_is_refused(raw: str) -> None:
    with pytest.raises(InfraError, match="CHRONOS_ES_NICE"):
        nice_level(raw)
