"""MessageView: one message of the conversation; code_blocks: the fenced code of a reply."""

from __future__ import annotations

import re

from textual.await_complete import AwaitComplete
from textual.widgets import Markdown, Static

__all__ = ["MessageView", "code_blocks"]

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a Markdown text, in order."""
    return [m.group(2).rstrip("\n") for m in _FENCE.finditer(markdown)]


class MessageView(Markdown):
    """One message of the conversation, rendered as Markdown (streamed for replies).

    A user's message is shown as typed, not as Markdown: Markdown joins single line breaks
    and drops indentation and `*`, which made a pasted multi-line prompt one run-on line.
    Its class is its role (user, assistant, info, error), plus "cancelled" for a stopped reply.
    """

    DEFAULT_CSS = """
    MessageView > .verbatim { margin: 0 0 1 0; }
    """

    def __init__(self, text: str, role: str, *, message_id: int | None = None) -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.text = text
        self.message_id = message_id
        self._verbatim = "user" in role.split()

    def update(self, markdown: str) -> AwaitComplete:
        if not self._verbatim:
            return super().update(markdown)
        self._markdown = markdown

        async def show() -> None:
            await self.remove_children()
            await self.mount(Static(markdown, markup=False, classes="verbatim"))

        return AwaitComplete(show())
