"""The warm-up: pipelines built in a background thread at start, each once, a user's call waiting
for the warm-up's build instead of starting another, and the state the pipelines table shows."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from mammo.demo import LoadState, PipelineChoice, loading, pipelines_markdown, warmup_names


@pytest.fixture(autouse=True)
def fresh_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing built or started yet (the module keeps them for the process)."""
    monkeypatch.setattr(loading, "_READY", {})
    monkeypatch.setattr(loading, "_STATES", {})
    monkeypatch.setattr(loading, "_WARMUP", [])


class _SlowBuilder:
    """A registry stand-in: each build takes `seconds`; "broken" fails; counts the builds."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds, self.builds = seconds, Counter[str]()
        self.started = threading.Event()

    def __call__(self, name: str) -> object:
        self.started.set()
        time.sleep(self.seconds)
        self.builds[name] += 1
        if name == "broken":
            raise FileNotFoundError("weights 'broken' not found")
        return object()


def _table(states: dict[str, LoadState]) -> str:
    choices = [PipelineChoice(name, "does things", "torch", True) for name in ("fast", "slow", "broken")]
    return pipelines_markdown(choices, states)


def test_warmup_builds_each_once_and_a_call_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    builder = _SlowBuilder()
    monkeypatch.setattr(loading, "get_pipeline", builder)
    thread = loading.start_warmup(["fast", "slow", "broken"])
    assert thread is not None and loading.start_warmup(["fast"]) is thread  # once per process
    assert _table(loading.load_states()).count("| loading… |") == 3  # queued ones show at once
    assert builder.started.wait(10)
    # the user asks for "slow" while the warm-up builds "fast": waits, and gets the warm-up's build
    pipeline = loading.build_pipeline("slow")
    thread.join(10)
    assert not thread.is_alive()
    assert loading.build_pipeline("slow") is pipeline
    assert builder.builds == {"fast": 1, "slow": 1, "broken": 1}
    states = loading.load_states()
    assert states["slow"].status == "ready" and states["slow"].seconds >= 0.3
    table = _table(states)
    assert "| `fast` | torch | does things | ready (loaded in 0." in table
    assert "| failed: weights 'broken' not found |" in table
    assert not loading.any_loading()


def test_a_failed_build_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    builder = _SlowBuilder(seconds=0.0)
    monkeypatch.setattr(loading, "get_pipeline", builder)
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            loading.build_pipeline("broken")
    assert builder.builds["broken"] == 2 and loading.load_states()["broken"].status == "failed"


def test_warmup_builds_the_real_breast_pipeline() -> None:
    from mammo.pipelines.base import Pipeline

    thread = loading.start_warmup(["breast"])
    assert thread is not None
    thread.join(60)
    state = loading.load_states()["breast"]
    assert state.status == "ready" and state.describe().startswith("ready (loaded in ")
    assert isinstance(loading.build_pipeline("breast"), Pipeline)


def test_nothing_to_warm_up() -> None:
    assert loading.start_warmup([]) is None and not loading.any_loading()


@pytest.mark.parametrize(("setting", "expected"), [
    (None, ["breast", "cascade", "glam"]), ("1", ["breast", "cascade", "glam"]),
    ("all", ["breast", "cascade", "glam"]), ("0", []), ("", []),
    ("glam, breast,nope", ["breast", "glam"]),
])
def test_warmup_names(setting: str | None, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if setting is None:
        monkeypatch.delenv(loading.WARMUP_ENV, raising=False)
    else:
        monkeypatch.setenv(loading.WARMUP_ENV, setting)
    assert warmup_names(["breast", "cascade", "glam"]) == expected
