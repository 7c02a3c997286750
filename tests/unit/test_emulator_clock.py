"""The standalone emulator's clock: its own (``--speed``, from its start, Retry-After in wall
seconds) or the service's (``--clock-speed``/``--clock-epoch``, by default DSAR_CLOCK_SPEED and
DSAR_CLOCK_EPOCH, Retry-After in the shared clock's seconds)."""

from __future__ import annotations

import pytest

from dsar_scheduler.adapters.clock import ScaledClock, SystemClock
from dsar_scheduler.tools.emulator.__main__ import _clock, _parser


@pytest.fixture(autouse=True)
def _no_clock_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSAR_CLOCK_SPEED", raising=False)
    monkeypatch.delenv("DSAR_CLOCK_EPOCH", raising=False)


def clock_of(argv: list[str]) -> tuple[object, float]:
    parser = _parser()
    return _clock(parser, parser.parse_args(argv))


def test_its_own_clock_as_before() -> None:
    clock, retry_after_speed = clock_of([])
    assert isinstance(clock, ScaledClock) and clock.speed == 60 == retry_after_speed
    clock, retry_after_speed = clock_of(["--speed", "1800"])
    assert isinstance(clock, ScaledClock) and clock.speed == 1800 == retry_after_speed


def test_the_services_clock_from_flags_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, retry_after_speed = clock_of(["--clock-speed", "3600", "--clock-epoch", "1.8e9"])
    assert isinstance(clock, ScaledClock)
    assert (clock.speed, clock.epoch, retry_after_speed) == (3600, 1.8e9, 1.0)
    monkeypatch.setenv("DSAR_CLOCK_SPEED", "120")
    monkeypatch.setenv("DSAR_CLOCK_EPOCH", "1700000000")
    clock, retry_after_speed = clock_of([])
    assert isinstance(clock, ScaledClock)
    assert (clock.speed, clock.epoch, retry_after_speed) == (120, 1.7e9, 1.0)
    monkeypatch.setenv("DSAR_CLOCK_SPEED", "1")
    clock, retry_after_speed = clock_of([])
    assert isinstance(clock, SystemClock) and retry_after_speed == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clock-speed", "3600"], "needs --clock-epoch"),
        (["--clock-speed", "0", "--clock-epoch", "1"], "must be positive"),
        (["--speed", "60", "--clock-epoch", "1"], "not with --clock-speed"),
        (["--speed", "-1"], "must be positive"),
    ],
)
def test_refusals_name_the_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        clock_of(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
