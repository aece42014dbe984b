"""Leaderboard test set-up: live updates bound to the test runtime, a movable clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime

import pytest

from leaderboards import clock, updates
from server.runtime import Runtime

# Keys and channels of this test run only: other runs on the same Redis (another engineer's,
# CI) neither see nor disturb ours. Set before first use; subprocesses inherit it.
os.environ.setdefault("QUESTLINE_LEADERBOARD_PREFIX", f"ql:lb:test{os.getpid()}:")


@pytest.fixture(autouse=True)
def bound(runtime: Runtime) -> Iterator[None]:
    """Every commit in these tests updates the boards through the test runtime."""
    updates.bind(runtime)
    yield
    updates.bind(runtime)


class Clock:
    """``leaderboards.clock.now`` pinned to a chosen moment (None: the real time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.moment: datetime | None = None
        real = clock.now
        monkeypatch.setattr(clock, "now", lambda: self.moment or real())

    def set(self, moment: datetime) -> None:
        self.moment = moment


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)
