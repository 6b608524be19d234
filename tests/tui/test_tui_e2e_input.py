"""`localllm chat` in tmux: a long line and Enter sent at once, and a 3,000-character paste
without bracketed paste, arrive whole in the store.

What tmux sends: `send-keys -l` types each character, "\\n" as LF, which the app reads as
ctrl+j (a newline key); `paste-buffer` without -p pastes without bracketed-paste markers
and turns each LF into CR, which the app reads as Enter: a paste from a terminal that
does not bracket pastes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tui_input import paste_text

from localllm.tui.store import History

pytestmark = [
    pytest.mark.slow,  # each test starts the app in its own process and a tmux server
    # Outside CI a missing tmux skips these tests; in CI (CI=true, where .ci/run installs tmux) they must run.
    pytest.mark.skipif(
        shutil.which("tmux") is None and os.environ.get("CI") != "true",
        reason="tmux is not installed (apt-get install -y tmux; CI installs it)",
    ),
]

LONG = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill, END"


class Tmux:
    def __init__(self, tmp_path: Path, model: Path, size: tuple[int, int]) -> None:
        self.data = tmp_path / "data"  # --ctx 4096: the paste is ~2,400 tokens of the tiny model
        self.socket = f"localllm-input-{os.getpid()}-{size[0]}"
        exe = Path(sys.executable).with_name("localllm")
        cmd = (
            f"env LOCALLLM_DATA={self.data} LOCALLLM_HOME={tmp_path / 'home'} TERM=xterm-256color "
            f"{exe} chat {model} --ctx 4096 --temperature 0 --max-tokens 8; echo EXITED $?; sleep 30"
        )
        self("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-s", "e2e", cmd)

    def __call__(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=check, capture_output=True, text=True).stdout

    def pane(self) -> str:
        return self("capture-pane", "-p", "-t", "e2e")

    def wait(self, cond, what: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.pane()
            if cond(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{text}")
            time.sleep(0.1)

    def stored(self) -> list[tuple[str, str]]:
        db = self.data / "chats.sqlite3"
        if not db.exists():
            return []
        with History(db) as h:
            return [(m.role, m.content) for c in h.chats() for m in h.messages(c.id)]

    def wait_stored(self, cond, what: str, timeout: float = 90.0) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.stored()
            if cond(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stored: {rows!r}\nscreen:\n{self.pane()}")
            time.sleep(0.1)

    def close(self) -> None:
        self("kill-server", check=False)


@pytest.fixture
def tmux_app(tiny_gguf, tmp_path, request):
    apps: list[Tmux] = []

    def start(size: tuple[int, int]) -> Tmux:
        app = Tmux(tmp_path, tiny_gguf, size)
        apps.append(app)
        app.wait(lambda t: "is ready" in t, "the model to load")
        return app

    yield start
    for app in apps:
        app.close()


def test_a_long_line_and_enter_sent_at_once_are_stored_whole(tmux_app):
    app = tmux_app((80, 24))
    app("send-keys", "-t", "e2e", "-l", LONG)
    app("send-keys", "-t", "e2e", "Enter")  # at once: not waiting for the text to show
    rows = app.wait_stored(lambda r: len(r) >= 2, "the message and its reply")
    assert rows[0] == ("user", LONG)
    # and a second burst right after the reply: its own text, not the previous one
    app("send-keys", "-t", "e2e", "-l", "second burst, END")
    app("send-keys", "-t", "e2e", "Enter")
    rows = app.wait_stored(lambda r: len(r) >= 4, "the second message and its reply")
    assert [c for r, c in rows if r == "user"] == [LONG, "second burst, END"]


def test_a_paste_without_bracketed_paste_stays_whole(tmux_app, tmp_path):
    text = paste_text() + "\nEND OF PASTE"
    assert len(text) > 3000 and text.count("\n") > 80
    source = tmp_path / "paste.txt"
    source.write_text(text)
    app = tmux_app((200, 50))
    app("load-buffer", "-b", "p", str(source))
    app("paste-buffer", "-b", "p", "-t", "e2e")  # no -p: no bracketed-paste markers; LF becomes CR (Enter)
    app.wait(lambda t: "END OF PASTE" in t, "the end of the paste in the prompt")
    assert app.stored() == []  # no line of it was sent
    app("send-keys", "-t", "e2e", "Enter")
    rows = app.wait_stored(lambda r: len(r) >= 2, "the message and its reply")
    assert rows[0] == ("user", text)
    assert [r for r, _ in rows] == ["user", "assistant"]
