"""StatusLine: the line under the conversation."""

from __future__ import annotations

from textual.widgets import Static

__all__ = ["StatusLine"]


class StatusLine(Static):
    """model · runtime · placement · context used/limit · TTFT · tokens/s."""
