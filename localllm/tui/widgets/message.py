"""MessageView: one message of the conversation; code_blocks: the fenced code of a reply."""

from __future__ import annotations

import re

from textual.widgets import Markdown

__all__ = ["MessageView", "code_blocks"]

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a Markdown text, in order."""
    return [m.group(2).rstrip("\n") for m in _FENCE.finditer(markdown)]


class MessageView(Markdown):
    """One message of the conversation, rendered as Markdown (streamed for replies).

    Its class is its role (user, assistant, info, error), plus "cancelled" for a stopped reply.
    """

    def __init__(self, text: str, role: str, *, message_id: int | None = None) -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.text = text
        self.message_id = message_id
