"""Building the demo's pipelines: one build at a time, once per process, and optionally ahead of
the first request (the warm-up thread), with a state per pipeline that the page's table shows.

Why one at a time: the registry's cache is a plain dict, and two builds at once would import
torch and tensorflow from two threads, whose order matters (`mammo.models.frameworks`). A request
for a pipeline that the warm-up is building waits for that build instead of starting another.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mammo.pipelines.base import Pipeline
from mammo.pipelines.registry import get_pipeline

logger = logging.getLogger(__name__)

WARMUP_ENV = "MAMMO_WARMUP"  # "0": no warm-up; "a,b": only those; unset, "1" or "all": every one
_BUILD_LOCK = threading.Lock()  # held for the whole of one build (see the module docstring)
_STATE_LOCK = threading.Lock()  # guards _STATES and _WARMUP only (held for microseconds)
_READY: dict[str, Pipeline] = {}  # built pipelines: served without waiting for _BUILD_LOCK
_STATES: dict[str, LoadState] = {}
_WARMUP: list[threading.Thread] = []  # the warm-up thread, once started


@dataclass(frozen=True)
class LoadState:
    """Where the build of one pipeline stands: status "loading", "ready" or "failed"."""

    status: str
    seconds: float = 0.0  # how long the build took, once ready
    error: str = ""  # why it failed

    def describe(self) -> str:
        """The text of the page's status column: "loading…", "ready (loaded in 12.3 s)", "failed: …"."""
        if self.status == "ready":
            return f"ready (loaded in {self.seconds:.1f} s)"
        if self.status == "failed":
            return f"failed: {self.error}"
        return "loading…"


def _set_state(name: str, state: LoadState) -> None:
    with _STATE_LOCK:
        _STATES[name] = state


def load_states() -> dict[str, LoadState]:
    """A snapshot: pipeline name -> its `LoadState`, for the pipelines asked for so far."""
    with _STATE_LOCK:
        return dict(_STATES)


def any_loading() -> bool:
    """Whether a build is queued or under way (the page keeps refreshing its table until not)."""
    return any(state.status == "loading" for state in load_states().values())


def build_pipeline(name: str) -> Pipeline:
    """The pipeline `name` ("cascade:fgt"), built on the first call and kept for the process.

    Raises:
        whatever the registry's builder raises (KeyError for an unknown name, the weights
        errors, ...), after recording the state "failed"; a later call tries again.
    """
    ready = _READY.get(name)
    if ready is not None:
        return ready
    with _BUILD_LOCK:
        if name in _READY:  # built by the warm-up (or another request) while this one waited
            return _READY[name]
        _set_state(name, LoadState("loading"))
        start = time.perf_counter()
        try:
            pipeline = get_pipeline(name)
        except Exception as err:  # recorded for the table, then the caller decides
            _set_state(name, LoadState("failed", error=str(err) or type(err).__name__))
            raise
        _READY[name] = pipeline
        _set_state(name, LoadState("ready", seconds=time.perf_counter() - start))
    return pipeline


def warm_up(names: Sequence[str]) -> None:
    """Build each pipeline of `names` in turn; a failure is logged and recorded, the rest go on."""
    for name in names:
        try:
            build_pipeline(name)
        except Exception as err:  # one broken pipeline must not stop the others from loading
            logger.warning("warm-up: %s failed to load: %s", name, err)
        else:
            logger.info("warm-up: %s %s", name, load_states()[name].describe())


def warmup_names(available: Sequence[str], setting: str | None = None) -> list[str]:
    """Which of `available` (in that order) the warm-up builds, from `setting` (default: the
    environment variable MAMMO_WARMUP): unset, "1" or "all" -> all; "0" or "" -> none;
    "a,b" -> those of them that are available."""
    setting = os.environ.get(WARMUP_ENV) if setting is None else setting
    if setting is None or setting.strip().lower() in ("1", "all"):
        return list(available)
    wanted = {name.strip() for name in setting.split(",")} - {"", "0"}
    return [name for name in available if name in wanted]


def start_warmup(names: Sequence[str]) -> threading.Thread | None:
    """Start building `names` in a daemon thread (once per process; later calls return the same
    thread); None when there is nothing to build. The names are marked "loading" at once, so the
    table shows what is coming."""
    with _STATE_LOCK:
        if _WARMUP:
            return _WARMUP[0]
        todo = [name for name in names if name not in _READY]
        if not todo:
            return None
        for name in todo:
            _STATES[name] = LoadState("loading")
        thread = threading.Thread(target=warm_up, args=(todo,), name="mammo-warmup", daemon=True)
        _WARMUP.append(thread)
    thread.start()
    return thread
