"""chronos.settings: types, bounds, defaults and messages that name the variable."""

from __future__ import annotations

from typing import Any

import pytest

from chronos.config import ConfigError
from chronos.settings import Setting, choice, flag, integer, number, required, text

PORT = integer("CHRONOS_TEST_PORT", 9101, minimum=0, maximum=65535, doc="A port.")
RATIO = number("CHRONOS_TEST_RATIO", 0.5, minimum=0.0, maximum=1.0, doc="A ratio.")
SWITCH = flag("CHRONOS_TEST_SWITCH", doc="A switch.")
MODE = choice("CHRONOS_TEST_MODE", "a", {"a": "a", "true": True}, doc="A mode.")
NAME = text("CHRONOS_TEST_NAME", "ledger", length_max=8, doc="A name.")
DSN = required("CHRONOS_TEST_DSN", type_name="DSN", doc="A DSN.", hint="set it")


def refusal(setting: Setting[Any], raw: str) -> str:
    with pytest.raises(ConfigError) as refused:
        setting.read({setting.name: raw})
    return str(refused.value)


def test_unset_and_empty_values_give_the_declared_default() -> None:
    for setting in (PORT, RATIO, SWITCH, MODE, NAME):
        assert setting.read({}) == setting.default
        assert setting.read({setting.name: ""}) == setting.default
    assert (PORT.default, RATIO.default, SWITCH.default, MODE.default) == (9101, 0.5, False, "a")


def test_values_are_parsed_to_their_type() -> None:
    assert PORT.read({"CHRONOS_TEST_PORT": "0"}) == 0
    assert RATIO.read({"CHRONOS_TEST_RATIO": "1"}) == 1.0
    assert SWITCH.read({"CHRONOS_TEST_SWITCH": "1"}) is True
    assert SWITCH.read({"CHRONOS_TEST_SWITCH": "0"}) is False
    assert MODE.read({"CHRONOS_TEST_MODE": "true"}) is True
    assert NAME.read({"CHRONOS_TEST_NAME": "journal"}) == "journal"


def test_the_process_environment_is_read_when_none_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHRONOS_TEST_PORT", "8080")
    assert PORT.read() == 8080


def test_bounds_are_inclusive_and_a_value_outside_them_is_refused_by_name() -> None:
    assert PORT.read({"CHRONOS_TEST_PORT": "65535"}) == 65535
    assert refusal(PORT, "65536") == "CHRONOS_TEST_PORT must be between 0 and 65535, got 65536"
    assert refusal(RATIO, "1.5") == "CHRONOS_TEST_RATIO must be between 0.0 and 1.0, got 1.5"


def test_a_value_of_the_wrong_type_is_refused_by_name() -> None:
    assert refusal(PORT, "9101.5") == "CHRONOS_TEST_PORT must be an integer, got '9101.5'"
    assert refusal(RATIO, "half") == "CHRONOS_TEST_RATIO must be a number, got 'half'"
    assert refusal(SWITCH, "true") == "CHRONOS_TEST_SWITCH must be 0 or 1, got 'true'"
    assert refusal(MODE, "b") == "CHRONOS_TEST_MODE must be a or true, got 'b'"
    assert refusal(NAME, "x" * 9) == "CHRONOS_TEST_NAME must be at most 8 characters, got 9"


def test_a_check_refuses_a_value_with_its_own_reason() -> None:
    def even(raw: str) -> None:
        if len(raw) % 2:
            raise ValueError(f"odd length {len(raw)}")

    pairs = text("CHRONOS_TEST_PAIRS", "ab", check=even, doc="Pairs.")
    assert pairs.read({"CHRONOS_TEST_PAIRS": "abcd"}) == "abcd"
    assert refusal(pairs, "abc") == "CHRONOS_TEST_PAIRS is not valid: odd length 3"


def test_a_choice_may_ignore_case() -> None:
    level = choice("CHRONOS_TEST_LEVEL", "INFO", {"INFO": "INFO"}, ignore_case=True, doc=".")
    assert level.read({"CHRONOS_TEST_LEVEL": "info"}) == "INFO"
    assert MODE.read({"CHRONOS_TEST_MODE": "a"}) == "a"
    assert refusal(MODE, "A") == "CHRONOS_TEST_MODE must be a or true, got 'A'"


def test_a_required_setting_has_no_default_and_says_how_to_set_it() -> None:
    assert DSN.read({"CHRONOS_TEST_DSN": "postgresql://db/ledger"}) == "postgresql://db/ledger"
    for environ in ({}, {"CHRONOS_TEST_DSN": ""}):
        with pytest.raises(ConfigError) as refused:
            DSN.read(environ)
        assert str(refused.value) == "CHRONOS_TEST_DSN is not set: set it"
    assert DSN.default_text == "required"


def test_a_default_outside_its_own_bounds_is_a_programming_error() -> None:
    with pytest.raises(AssertionError):
        integer("CHRONOS_TEST_BAD", 0, minimum=1, maximum=2, doc="")
    with pytest.raises(AssertionError):
        choice("CHRONOS_TEST_BAD", "c", {"a": 1}, doc="")
    with pytest.raises(ValueError):
        text("CHRONOS_TEST_BAD", "too long", length_max=3, doc="")


def test_the_documented_default_and_bounds_come_from_the_declaration() -> None:
    assert (PORT.default_text, PORT.bounds) == ("9101", "0 to 65535")
    assert (RATIO.default_text, RATIO.bounds) == ("0.5", "0 to 1")
    assert (SWITCH.default_text, SWITCH.bounds) == ("0", "0 or 1")
    assert (MODE.default_text, MODE.bounds) == ("a", "a or true")
    assert (NAME.default_text, NAME.bounds) == ("ledger", "at most 8 characters")


def test_a_bad_telemetry_setting_stops_a_service_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chronos import telemetry
    from chronos.process import run_service

    class Config:
        metrics_port = 0

    def body(_config: Config) -> int:
        raise AssertionError("the service body ran")

    monkeypatch.setenv("CHRONOS_LOG_LEVEL", "loud")
    assert run_service("test-service", Config, body) == 2
    assert "test-service: CHRONOS_LOG_LEVEL must be " in capsys.readouterr().err
    assert not telemetry._configured, "telemetry was set up before the check"
