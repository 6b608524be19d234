"""Several sequences in one ONNX decoder: the rows of the batch dimension (the `BatchEngine` methods).

Layout: row r of every `past_key_values.*` tensor [B, kv_heads, T, head_dim] holds sequence r.
All rows share one KV length T (the columns); each row has its own attention-mask row (1 at
its real positions, 0 at padding and at columns written before it joined or after it was cut)
and its own position ids (its token count), so a row's columns may have holes.

One call to `eval_batch` steps every row at once: its items' tokens are left-padded to the
longest (so every item's last token sits in the last column, where the logits are read) and
rows without tokens in the call take a masked pad. The KV then stays one [B, ...] OrtValue per
layer, bound straight back as the next `past_key_values` (no gather/scatter of rows through
numpy each step); the scheduler steps every active sequence each call anyway, so the masked
work is the ragged padding and the free rows below the highest one in use (B is the highest
sequence in use + 1, so an engine serving sequence 0 alone runs a batch of one).

When T would pass n_ctx and at least n_ctx/4 columns are padding in every row's view (T minus
the longest row), the cache is compacted: each row's real columns move to the right end, T
becomes the longest row. So a compaction (one copy of the cache) frees n_ctx/4 columns or more,
and T stays under 1.25 n_ctx plus the widest call (the KV holds at most that many columns per
row, against the n_ctx the plan sized); each sequence itself never passes n_ctx.

Per-row masks and positions need an export that takes `attention_mask` and `position_ids`
with a free batch dimension: onnxruntime-genai's GroupQueryAttention exports take no
position ids (the op derives each row's positions and valid length from `seqlens_k`, as if
its tokens were contiguous from column 0), so they load with one row (`batch_refusal` says why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localllm.errors import ContextOverflowError, GenerationError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.formats.onnx_folder import OnnxFolderInfo, OnnxIO

__all__ = ["OnnxBatch", "batch_refusal"]

log = logging.getLogger(__name__)


def batch_refusal(io: OnnxIO, session: Any) -> str | None:
    """Why this export cannot hold several sequences in its batch rows, or None when it can."""
    if io.attention_mask is None:
        return "the export has no attention_mask input, so padded rows cannot be masked"
    if io.position_ids is None:
        return (
            "the export has no position_ids input (onnxruntime-genai's GroupQueryAttention layout derives "
            "positions from the mask as if each row's tokens were contiguous), so rows cannot join mid-run"
        )
    dim = next((i.shape[0] for i in session.get_inputs() if i.name == io.input_ids), None)
    if isinstance(dim, int) and dim == 1:
        return "the export's batch dimension is fixed at 1"
    return None


class OnnxBatch:
    """BatchEngine methods of `OnnxEngine` (see the module docstring for the layout)."""

    # provided by OnnxEngine
    _np: Any
    _io: OnnxIO
    _binding: Any
    _session: Any
    _past: list[Any]
    _tokens: list[int]
    info: OnnxFolderInfo
    n_ctx: int
    n_batch: int
    n_vocab: int
    provider: str
    n_seq_max: int
    batch_refusal: str | None
    _rows: list[list[int]]
    _mask: np.ndarray

    _kv_np: Any
    _closed: bool

    if TYPE_CHECKING:  # pragma: no cover

        def _ortvalue(self, array: np.ndarray) -> Any: ...
        def _bind_outputs(self) -> None: ...
        def _require_tok(self) -> Any: ...
        def eval(self, tokens: Sequence[int]) -> np.ndarray: ...
        def rewind(self, n_keep: int) -> None: ...

    def _reset_rows(self) -> None:
        """One empty row; `_tokens` (sequence 0, what eval/rewind/cached_tokens see) is row 0."""
        np = self._np
        shape = (1, self.info.n_head_kv, 0, self.info.head_dim)
        self._past = [self._ortvalue(np.zeros(shape, dtype=self._kv_np)) for _ in range(2 * self.info.n_layer)]
        self._rows = [[]]
        self._tokens = self._rows[0]
        self._mask = np.zeros((1, 0), dtype=np.int64)

    # --- the BatchEngine contract ----------------------------------------------------------
    def seq_tokens(self, seq: int) -> Sequence[int]:
        self._check_seq(seq)
        return tuple(self._rows[seq]) if seq < len(self._rows) else ()

    def eval_batch(self, items: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """Append each item's tokens to its sequence, all rows in one run per n_batch; last logits per item."""
        self._require_tok()
        parts = [(int(seq), list(tokens)) for seq, tokens in items]
        seqs = [seq for seq, _ in parts]
        if len(set(seqs)) != len(seqs):
            raise ValueError(f"eval_batch needs distinct sequences, got {seqs}")
        for seq, tokens in parts:
            self._check_seq(seq)
            if not tokens:
                raise ValueError(f"eval_batch: sequence {seq} has no tokens")
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            if bad:
                raise GenerationError(f"token id(s) {bad[:5]} outside the vocabulary of {self.n_vocab}")
            have = len(self.seq_tokens(seq))
            if have + len(tokens) > self.n_ctx:
                raise ContextOverflowError(
                    f"sequence {seq}: {have} cached + {len(tokens)} new tokens exceed its context of {self.n_ctx}",
                    n_prompt=have + len(tokens),
                    n_ctx=self.n_ctx,
                )
        if not parts:
            return []
        if self.n_seq_max == 1:  # the single-sequence path, with its zero-copy logits
            return [self.eval(parts[0][1]).copy()]
        self._add_rows(max(seqs) + 1)
        out: list[Any] = [None] * len(parts)
        nb = self.n_batch
        try:
            for start in range(0, max(len(t) for _, t in parts), nb):
                chunk = {seq: t[start : start + nb] for seq, t in parts if len(t) > start}
                logits = self._run_rows(chunk)
                for i, (seq, tokens) in enumerate(parts):
                    if start < len(tokens) <= start + nb:  # this item's last token was in this run
                        out[i] = logits[seq].astype(self._np.float32, copy=True)
        except GenerationError:
            for seq in seqs:
                self.seq_keep(seq, 0)
            raise
        return out

    def seq_keep(self, seq: int, n_keep: int) -> None:
        """Drop positions >= n_keep of `seq` (their columns are masked); 0 frees the row."""
        self._check_seq(seq)
        if self._closed:  # nothing left to free
            return
        if self.n_seq_max == 1:
            self.rewind(n_keep)
            return
        if seq >= len(self._rows):
            return
        tokens = self._rows[seq]
        n_keep = max(0, min(int(n_keep), len(tokens)))
        if n_keep == len(tokens):
            return
        cols = self._np.flatnonzero(self._mask[seq])
        self._mask[seq, cols[n_keep:]] = 0
        del tokens[n_keep:]
        if n_keep == 0:
            self._trim_rows()

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        """`dst` (emptied first) gets `src`'s first n positions: its KV row and mask, not recomputed."""
        self._check_seq(src)
        self._check_seq(dst)
        if src == dst:
            raise ValueError(f"seq_copy needs two different sequences, got {src} twice")
        if not 0 <= n <= len(self.seq_tokens(src)):
            raise ValueError(f"seq_copy: sequence {src} holds {len(self.seq_tokens(src))} positions, not {n}")
        self.seq_keep(dst, 0)
        if n == 0:
            return
        self._add_rows(dst + 1)
        np = self._np

        def copy_row(a):
            a = np.array(a)
            a[dst] = a[src]
            return a

        self._rebuild(copy_row)
        self._mask[dst] = 0
        self._mask[dst, np.flatnonzero(self._mask[src])[:n]] = 1
        self._rows[dst][:] = self._rows[src][:n]

    def reset_batch(self) -> None:
        """Free every sequence, sequence 0 included (nothing to do once closed)."""
        if not self._closed:
            self._reset_rows()

    # --- rows ------------------------------------------------------------------------------
    def _check_seq(self, seq: int) -> None:
        if not 0 <= seq < self.n_seq_max:
            why = f" ({self.batch_refusal})" if self.batch_refusal else ""
            raise ValueError(f"sequence {seq} is outside this engine's {self.n_seq_max} sequence(s){why}")

    def _rebuild(self, make) -> None:
        """Replace each layer's KV by make(numpy array of it), copied: `OrtValue.numpy()` on the CPU
        may be a view of the OrtValue's buffer, which is freed once the OrtValue is dropped."""
        self._past = [self._ortvalue(self._np.array(make(v.numpy()), order="C")) for v in self._past]

    def _add_rows(self, n_rows: int) -> None:
        np = self._np
        extra = n_rows - len(self._rows)
        if extra <= 0:
            return
        self._rebuild(lambda a: np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)], axis=0))
        self._mask = np.concatenate([self._mask, np.zeros((extra, self._mask.shape[1]), np.int64)], axis=0)
        self._rows += [[] for _ in range(extra)]

    def _trim_rows(self) -> None:
        """Drop empty rows at the top (row 0 stays); all empty: back to no columns."""
        if not any(self._rows):
            self._reset_rows()
            return
        keep = len(self._rows)
        while keep > 1 and not self._rows[keep - 1]:
            keep -= 1
        if keep < len(self._rows):
            self._rebuild(lambda a: a[:keep])
            self._mask = self._mask[:keep].copy()
            del self._rows[keep:]

    def _compact(self) -> None:
        """Move each row's real columns to the right end; T becomes the longest row."""
        np = self._np
        width = max(len(r) for r in self._rows)
        cols = [np.flatnonzero(m) for m in self._mask]
        before = self._mask.shape[1]

        def squeeze(a):
            out = np.zeros((a.shape[0], a.shape[1], width, a.shape[3]), a.dtype)
            for r, c in enumerate(cols):
                if len(c):
                    out[r, :, width - len(c) :] = a[r][:, c]
            return out

        self._rebuild(squeeze)
        mask = np.zeros((len(self._rows), width), np.int64)
        for r, c in enumerate(cols):
            mask[r, width - len(c) :] = 1
        self._mask = mask
        log.debug("compacted the batch KV cache from %d to %d columns", before, width)

    def _run_rows(self, chunk: dict[int, list[int]]) -> np.ndarray:
        """One run over every row: chunk's tokens left-padded, other rows a masked pad; logits [B, n_vocab]."""
        np, io, b = self._np, self._io, self._binding
        n_rows, width = len(self._rows), max(len(t) for t in chunk.values())
        n_cols = self._mask.shape[1]
        if n_cols + width > self.n_ctx and n_cols - max(map(len, self._rows)) >= max(1, self.n_ctx // 4):
            self._compact()
        ids = np.zeros((n_rows, width), np.int64)
        pos = np.zeros((n_rows, width), np.int64)
        new = np.zeros((n_rows, width), np.int64)
        for seq, tokens in chunk.items():
            n, have = len(tokens), len(self._rows[seq])
            ids[seq, width - n :] = tokens
            pos[seq, width - n :] = np.arange(have, have + n)
            new[seq, width - n :] = 1
        n_past = self._mask.shape[1]
        mask = np.concatenate([self._mask, new], axis=1)
        b.bind_cpu_input(io.input_ids, ids)
        b.bind_cpu_input(io.attention_mask, mask)
        b.bind_cpu_input(io.position_ids, pos)
        if io.use_cache_branch:
            b.bind_cpu_input(io.use_cache_branch, np.array([n_past > 0]))
        if io.logits_to_keep:
            b.bind_cpu_input(io.logits_to_keep, np.array(1, dtype=np.int64))
        self._bind_outputs()
        for i in range(self.info.n_layer):
            b.bind_ortvalue_input(io.past_keys[i], self._past[2 * i])
            b.bind_ortvalue_input(io.past_values[i], self._past[2 * i + 1])
        try:
            self._session.run_with_iobinding(b)
        except Exception as exc:
            raise GenerationError(
                f"ONNX Runtime failed on a batch of {n_rows} rows x {width} tokens at column {n_past} "
                f"(n_ctx {self.n_ctx}) with {self.provider}: {exc}"
            ) from exc
        outs = b.get_outputs()
        n_layer = self.info.n_layer
        keys, values = outs[1 : 1 + n_layer], outs[1 + n_layer :]
        self._past = [v for pair in zip(keys, values, strict=True) for v in pair]
        self._mask = mask
        for seq, tokens in chunk.items():
            self._rows[seq].extend(tokens)
        logits = outs[0].numpy()
        return logits.reshape(n_rows, -1, logits.shape[-1])[:, -1]
