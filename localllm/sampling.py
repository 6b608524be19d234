"""Per-token helpers of the shared loop: picking a token, UTF-8 across tokens, stop strings.

numpy is imported inside functions so that `import localllm` stays light.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.options import SamplingOptions

__all__ = ["Sampler", "StopMatcher", "Utf8Decoder"]


class Utf8Decoder:
    """Incremental UTF-8: bytes of a character split across tokens come out whole.

    Invalid bytes become U+FFFD, as a terminal would show them; never a broken character.
    A character still incomplete when generation ends (max_tokens cut it between its
    tokens) is dropped: it is not text yet, and U+FFFD would not be the model's either.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        pending, _ = self._decoder.getstate()
        if pending and len(pending) < 4 and _starts_a_sequence(pending):
            self._decoder.reset()
            return ""
        return self._decoder.decode(b"", final=True)


def _starts_a_sequence(data: bytes) -> bool:
    """True when `data` is a valid but unfinished UTF-8 sequence (a lead byte and continuations)."""
    lead = data[0]
    need = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    return need > len(data) and all(0x80 <= b <= 0xBF for b in data[1:])


class StopMatcher:
    """Finds stop strings in streamed text; nothing of a stop string is ever emitted.

    `feed` returns (text safe to emit, stopped). Text that could be the start of a stop
    string is held back until the next piece shows whether it is one.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buf = self._held + text
        # held text holds no whole stop string (it would have stopped), so a plain find is exact
        found = -1
        for s in self._stops:
            i = buf.find(s)
            if i != -1 and (found == -1 or i < found):
                found = i
        if found != -1:
            self._held = ""
            return buf[:found], True
        hold = self._partial_suffix(buf)
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """Text still held back when the stream ends without a stop."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best


class Sampler:
    """Picks the next token from logits, in llama.cpp's order: penalties, top_k, top_p, min_p, temperature.

    Greedy (temperature 0) is a single argmax. Otherwise top_k runs first with
    `argpartition`, so only k candidates are sorted and softmaxed even for a 150k vocabulary.
    """

    def __init__(self, options: SamplingOptions, n_vocab: int) -> None:
        import numpy as np

        self.options = options
        self.n_vocab = n_vocab
        self._rng = np.random.default_rng(options.seed)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        import numpy as np

        o = self.options
        if o.repeat_penalty != 1.0 and o.repeat_last_n and history:
            recent = np.unique(np.asarray(history[-o.repeat_last_n :], dtype=np.int64))
            recent = recent[(recent >= 0) & (recent < logits.shape[0])]
            logits = logits.copy()  # never write into the backend's buffer
            vals = logits[recent]
            # llama.cpp's rule: shrink positive logits, push negative ones further down
            logits[recent] = np.where(vals > 0, vals / o.repeat_penalty, vals * o.repeat_penalty)
        if o.temperature == 0:
            return int(np.argmax(logits))

        n = logits.shape[0]
        k = o.top_k if 0 < o.top_k < n else n
        idx = np.argpartition(logits, n - k)[n - k :] if k < n else np.arange(n)
        vals = logits[idx].astype(np.float64)
        order = np.argsort(-vals, kind="stable")
        idx, vals = idx[order], vals[order]
        if o.top_p < 1.0:
            p = np.exp(vals - vals[0])
            p /= p.sum()
            keep = int(np.searchsorted(np.cumsum(p), o.top_p)) + 1  # smallest set reaching top_p
            idx, vals = idx[:keep], vals[:keep]
        if o.min_p > 0.0:
            # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
            keep = int(np.count_nonzero(vals >= vals[0] + math.log(o.min_p)))
            idx, vals = idx[: max(keep, 1)], vals[: max(keep, 1)]
        p = np.exp((vals - vals[0]) / o.temperature)
        cdf = np.cumsum(p)
        choice = int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right"))
        return int(idx[min(choice, len(idx) - 1)])
