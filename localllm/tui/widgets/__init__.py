"""Widgets of the chat screen; their styles are in localllm/tui/styles.tcss.

chat_list.py   ChatList (the sidebar), ChatListItem
message.py     MessageView (one message, Markdown segments), ReplyStream, fit_segments, code_blocks
prompt.py      PromptArea (Enter sends, prompt history)
status.py      StatusLine
"""

from __future__ import annotations

from localllm.tui.widgets.chat_list import ChatList, ChatListItem
from localllm.tui.widgets.message import MessageView, ReplyStream, code_blocks, fit_segments
from localllm.tui.widgets.prompt import PromptArea
from localllm.tui.widgets.status import StatusLine

__all__ = [
    "ChatList",
    "ChatListItem",
    "MessageView",
    "PromptArea",
    "ReplyStream",
    "StatusLine",
    "code_blocks",
    "fit_segments",
]
