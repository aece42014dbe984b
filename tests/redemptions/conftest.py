"""Fixtures of the redemption tests."""

from __future__ import annotations

import pytest

from tests.redemptions import helpers


@pytest.fixture(params=["transaction", "autocommit"])
def redeem_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with ``helpers.redeem`` in a transaction, then as one autocommit
    statement (the two ways the API runs a redemption)."""
    mode: str = request.param
    monkeypatch.setitem(helpers.REDEEM_PATH, "mode", mode)
    return mode
