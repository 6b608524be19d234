"""A fast, paced stand-in for a Model's chat API, and realistic Markdown replies for it.

    from localllm.testing import FakeChatModel, markdown_reply

    model = FakeChatModel(markdown_reply(4000), tokens_per_s=10_000)
    app = ChatApp("fake", loader=lambda target, **kw: model)

For UI tests and benchmarks that need a reply streamed at a chosen rate (thousands of
tokens/s, faster than any engine this machine runs), with the chat API the TUI uses:
`info`, `count_tokens`, `fit_chat`, `chat_stream`, `cancel`, `close`. The runtimes
themselves are tested on real files; this is the edge a UI test cannot reach at speed.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["FakeChatModel", "markdown_reply", "split_tokens"]

# About four characters a token, the average of BPE vocabularies on English text and code:
# a leading space stays with the word it precedes, as in those vocabularies.
_TOKEN = re.compile(r" ?[^\s]{1,4}|\s")
# Behind schedule by less than this the stream does not sleep: time.sleep's own cost
# (tens of microseconds) would otherwise cap the rate near 10,000 tokens/s.
_SLEEP_MIN_S = 0.001


def split_tokens(text: str) -> list[str]:
    """`text` in pieces of about four characters, as a tokenizer would cut it; they join back to `text`."""
    return _TOKEN.findall(text)


class FakeChatModel:
    """Streams `reply` (one piece of `split_tokens` a token) at `tokens_per_s`, or as fast as it can (None).

    Every reply is the same text; `replies`, when given, are used in turn first. Honours the
    `stop_event` and `cancel()` between tokens, ending with finish_reason "cancelled", else
    with `finish`. Conversations sent are in `.sent`; `.streamed` counts tokens written.
    """

    def __init__(
        self,
        reply: str = "fake reply",
        *,
        tokens_per_s: float | None = 1000.0,
        replies: Sequence[str] = (),
        finish: str = "eos",
        name: str = "fake",
        n_ctx: int = 32768,
    ) -> None:
        from localllm import ModelInfo, Placement

        self.info = ModelInfo(
            name=name,
            path=f"{name}.gguf",
            runtime="llama.cpp",
            placement=Placement(n_ctx=n_ctx),
            n_ctx=n_ctx,
            template_source="gguf",
        )
        self.reply = reply
        self.replies = list(replies)
        self.tokens_per_s = tokens_per_s
        self.finish = finish
        self.sent: list[list[dict[str, str]]] = []
        self.streamed = 0
        self.closed = False
        self._cancel = threading.Event()

    def count_tokens(self, messages: str | Sequence[dict[str, str]]) -> int:
        if isinstance(messages, str):
            return len(split_tokens(messages))
        return sum(4 + len(split_tokens(m["content"])) for m in messages)

    def fit_chat(self, messages: Sequence[dict[str, str]], **options: Any) -> tuple[int, int]:
        """Everything fits: a fake's window is only for the status line."""
        from localllm import SamplingOptions

        SamplingOptions.from_kwargs(**options)  # unknown options raise, as the real one does
        return self.count_tokens(messages), 0

    def chat_stream(
        self,
        messages: Sequence[dict[str, str]],
        *,
        overflow: str = "error",
        stop_event: threading.Event | None = None,
        on_prompt_progress: Any = None,
        **options: Any,
    ) -> Iterator[Any]:
        from localllm import SamplingOptions

        SamplingOptions.from_kwargs(**options)
        self.sent.append([dict(m) for m in messages])
        text = self.replies.pop(0) if self.replies else self.reply
        total = self.count_tokens(messages)
        if on_prompt_progress is not None:
            on_prompt_progress(total, total)
        return self._stream(split_tokens(text), total, stop_event or threading.Event())

    def _stream(self, pieces: list[str], prompt_tokens: int, stop: threading.Event) -> Iterator[Any]:
        from localllm import Chunk

        rate = self.tokens_per_s
        start = time.perf_counter()
        for i, piece in enumerate(pieces):
            if stop.is_set() or self._cancel.is_set():
                yield Chunk("", finish_reason="cancelled", timings=self._timings(prompt_tokens, i, start))
                return
            if rate is not None:  # on schedule: token i is due i / rate seconds after the start
                ahead = start + i / rate - time.perf_counter()
                if ahead > _SLEEP_MIN_S:
                    time.sleep(ahead)
            self.streamed += 1
            yield Chunk(piece, token_ids=(i,))
        timings = self._timings(prompt_tokens, len(pieces), start)
        yield Chunk("", finish_reason=self.finish, timings=timings)

    @staticmethod
    def _timings(prompt_tokens: int, decoded: int, start: float) -> Any:
        from localllm import Timings

        elapsed = time.perf_counter() - start
        return Timings(
            prompt_tokens=prompt_tokens,
            decode_tokens=decoded,
            ttft_s=0.0,
            decode_tps=decoded / elapsed if elapsed > 0 else 0.0,
            total_s=elapsed,
        )

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self.closed = True
        self._cancel.set()


# -- realistic replies -------------------------------------------------------------------

_WORDS_TEXT = (
    "the model reads each token of the prompt and then writes its reply one piece at a time while "
    "the screen keeps up with what arrives so that typing stays smooth and nothing waits for the "
    "layout of a long document with lists tables and code in it that grows as the answer goes on"
)
_CODE = (
    "def {name}(items: list[int], limit: int = {n}) -> list[int]:",
    '    """Keep the items under the limit, in order."""',
    "    kept = []",
    "    for item in items:",
    "        if item < limit:  # {word} {word2}",
    "            kept.append(item * {n})",
    "    return kept",
    "",
    "print({name}([1, 2, 3, {n}]))",
)


def markdown_reply(tokens: int = 2000, *, seed: int = 0) -> str:
    """A Markdown reply of about `tokens` tokens (as `split_tokens` cuts it), the mix a chat model
    writes: headings, paragraphs with **bold** and `code`, bullet and numbered lists, fenced
    Python code, and a small table. The same `seed` gives the same text."""
    rng = random.Random(seed)
    vocabulary = _WORDS_TEXT.split()

    def sentence() -> str:
        words = rng.choices(vocabulary, k=rng.randint(8, 20))
        if rng.random() < 0.3:
            words[rng.randrange(len(words))] = f"`{rng.choice(vocabulary)}()`"
        if rng.random() < 0.3:
            words[rng.randrange(len(words))] = f"**{rng.choice(vocabulary)}**"
        return " ".join(words).capitalize() + "."

    def paragraph() -> str:
        return " ".join(sentence() for _ in range(rng.randint(2, 5)))

    def code() -> str:
        fill = {"name": rng.choice(vocabulary) + "_items", "n": rng.randint(2, 99)}
        lines = [
            line.format(**fill, word=rng.choice(vocabulary), word2=rng.choice(vocabulary))
            for line in _CODE[: rng.randint(4, len(_CODE))]
        ]
        return "```python\n" + "\n".join(lines) + "\n```"

    def bullets(numbered: bool) -> str:
        items = [sentence() for _ in range(rng.randint(3, 6))]
        return "\n".join(f"{i + 1}. {s}" if numbered else f"- {s}" for i, s in enumerate(items))

    def table() -> str:
        rows = ["| step | what | tokens |", "|---|---|---|"]
        rows += [
            f"| {i + 1} | {rng.choice(vocabulary)} {rng.choice(vocabulary)} | {rng.randint(1, 999)} |" for i in range(4)
        ]
        return "\n".join(rows)

    blocks = [paragraph()]
    makers = [paragraph, paragraph, paragraph, code, code, lambda: bullets(False), lambda: bullets(True), table]
    section, count = 1, len(split_tokens(blocks[0]))
    while count < tokens:
        if rng.random() < 0.12:
            blocks.append(f"## {section}. {sentence()[:-1]}")
            section += 1
            count += len(split_tokens(blocks[-1])) + 2
        blocks.append(rng.choice(makers)())
        count += len(split_tokens(blocks[-1])) + 2  # and the blank line after it
    return "\n\n".join(blocks) + "\n"
