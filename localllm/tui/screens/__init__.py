"""The app's screens, one module each; their styles are in localllm/tui/styles.tcss.

chat.py      ChatScreen: conversation, prompt, chat list, status; generation in a thread
startup.py   StartupScreen: hardware, plan, fetch/load progress or the error; report_text
plan.py      PlanScreen: why this model (F4)
help.py      HelpScreen: keys and binding ids (F1)
models.py    ModelSwitcher: what fits here; Enter loads (ctrl+o)
settings.py  SettingsScreen: system prompt and sampling of a chat (ctrl+s)
dialogs.py   TextPrompt, ConfirmScreen
"""

from __future__ import annotations

from localllm.tui.screens.chat import ChatScreen
from localllm.tui.screens.dialogs import ConfirmScreen, TextPrompt
from localllm.tui.screens.help import HelpScreen
from localllm.tui.screens.models import ModelSwitcher
from localllm.tui.screens.plan import PlanScreen
from localllm.tui.screens.settings import SettingsScreen
from localllm.tui.screens.startup import StartupScreen, report_text

__all__ = [
    "ChatScreen",
    "ConfirmScreen",
    "HelpScreen",
    "ModelSwitcher",
    "PlanScreen",
    "SettingsScreen",
    "StartupScreen",
    "TextPrompt",
    "report_text",
]
