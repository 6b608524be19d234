"""Fixtures for the TUI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def tui_db(tmp_path):
    return tmp_path / "chats.sqlite3"
