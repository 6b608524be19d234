"""Several sequences in one llama.cpp context: the `BatchEngine` half of `LlamaCppEngine`.

Each sequence is a `seq_id` with its own KV stream (the context is made with `kv_unified`
off, see `LlamaCppEngine`), its own positions and its own logits row. `eval_batch` packs the
tokens of every sequence it is given into one `llama_batch` per `llama_decode` (up to
n_batch tokens), asking for logits only at each item's last token.

`eval_all` is sequence 0's batch with logits at every token (for speculative decoding: the
draft tokens are checked from one decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localllm.errors import ContextOverflowError, GenerationError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["LlamaCppBatch"]


class LlamaCppBatch:
    """Mixed into LlamaCppEngine, which sets these up when it loads."""

    _lib: Any
    _np: Any
    _ctx: Any
    _mem: Any
    _batch: Any
    _seqs: list[list[int]]
    n_seq_max: int
    n_ctx: int
    n_batch: int
    n_vocab: int

    _tokens: list[int]

    def _require(self) -> Any:  # pragma: no cover - LlamaCppEngine's
        raise NotImplementedError

    if TYPE_CHECKING:  # pragma: no cover

        def _room_for(self, tokens: Sequence[int]) -> list[int]: ...

    def eval_all(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens to sequence 0's cache; float32 logits [len(tokens), n_vocab] of every one: a
        view of llama.cpp's buffer, valid until the next decode, when they fit one n_batch (else a copy).

        Raises:
            ContextOverflowError: the tokens would pass n_ctx (nothing is evaluated then).
            GenerationError: llama.cpp failed; the failed batch's tokens are not in the cache.
        """
        from localllm.runtimes.llamacpp import _take_native_error

        lib = self._require()
        tokens = self._room_for(tokens)
        batch, np, parts = self._batch, self._np, []
        for lo in range(0, len(tokens), self.n_batch):
            part, pos0 = tokens[lo : lo + self.n_batch], len(self._tokens)
            for i, tok in enumerate(part):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos0 + i, 1, 1
                batch.seq_id[i][0] = 0
            batch.n_tokens = len(part)
            rc = lib.llama_decode(self._ctx, batch)
            if rc != 0:
                lib.llama_memory_seq_rm(self._mem, 0, pos0, -1)  # no half-written cells
                raise GenerationError(
                    f"llama_decode returned {rc} at position {pos0} ({len(part)} tokens with all logits, "
                    f"n_ctx {self.n_ctx})" + _take_native_error()
                )
            self._tokens.extend(part)
            ptr = lib.llama_get_logits(self._ctx)  # rows in batch order, one per token asked for
            if not ptr:
                raise GenerationError("llama.cpp returned no logits for the batch")
            rows = np.ctypeslib.as_array(ptr, shape=(len(part), self.n_vocab))
            parts.append(rows if len(tokens) <= self.n_batch else rows.copy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _seq(self, seq: int) -> list[int]:
        if not 0 <= seq < self.n_seq_max:
            raise ValueError(f"no sequence {seq}: this engine holds {self.n_seq_max} (0 to {self.n_seq_max - 1})")
        return self._seqs[seq]

    def seq_tokens(self, seq: int) -> Sequence[int]:
        """Token ids in sequence `seq`'s cache, in order."""
        return tuple(self._seq(seq))

    def eval_batch(self, items: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """Append each item's tokens to its sequence, all in the same decode calls; returns, in item
        order, a float32 [n_vocab] copy of the logits after each item's last token.

        Raises:
            ContextOverflowError: a sequence would pass n_ctx (nothing is evaluated then).
            GenerationError: llama.cpp failed; every sequence of the call is back where it was.
        """
        from localllm.runtimes.llamacpp import _take_native_error

        lib = self._require()
        plan: list[tuple[int, list[int]]] = []
        seen: set[int] = set()
        for seq, tokens in items:
            cached, tokens = self._seq(seq), list(tokens)
            if seq in seen:
                raise ValueError(f"sequence {seq} appears twice in one eval_batch call")
            if not tokens:
                raise ValueError(f"eval_batch needs at least one token for sequence {seq}")
            if len(cached) + len(tokens) > self.n_ctx:
                raise ContextOverflowError(
                    f"sequence {seq}: {len(cached)} cached + {len(tokens)} new tokens exceed its context "
                    f"window of {self.n_ctx}",
                    n_prompt=len(cached) + len(tokens),
                    n_ctx=self.n_ctx,
                )
            seen.add(seq)
            plan.append((seq, tokens))
        start = {seq: len(self._seqs[seq]) for seq, _ in plan}
        # by sequence id: llama.cpp's split of a multi-stream batch takes runs of consecutive ids
        order = sorted(range(len(plan)), key=lambda i: plan[i][0])
        flat = [(i, t) for i in order for t in range(len(plan[i][1]))]
        out: list[Any] = [None] * len(plan)
        batch = self._batch
        for lo in range(0, len(flat), self.n_batch):
            part = flat[lo : lo + self.n_batch]
            rows: list[tuple[int, int]] = []  # (item, row in this batch) of the items ending here
            for row, (i, t) in enumerate(part):
                seq, tokens = plan[i]
                batch.token[row] = tokens[t]
                batch.pos[row] = start[seq] + t
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = seq
                last = t == len(tokens) - 1
                batch.logits[row] = 1 if last else 0
                if last:
                    rows.append((i, row))
            batch.n_tokens = len(part)
            rc = lib.llama_decode(self._ctx, batch)
            if rc != 0:
                for seq in start:  # no half-written cells: every sequence of the call as it was
                    lib.llama_memory_seq_rm(self._mem, seq, start[seq], -1)
                    del self._seqs[seq][start[seq] :]
                raise GenerationError(
                    f"llama_decode returned {rc} for {len(part)} tokens of sequences {sorted(start)} "
                    f"(n_ctx {self.n_ctx} each)"
                    + ("; the KV cache has no free slot" if rc == 1 else "")
                    + _take_native_error()
                )
            for i, t in part:
                self._seqs[plan[i][0]].append(plan[i][1][t])
            for i, row in rows:
                ptr = lib.llama_get_logits_ith(self._ctx, row)
                if not ptr:
                    raise GenerationError(f"llama.cpp returned no logits for sequence {plan[i][0]}")
                out[i] = self._np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
        return out

    def seq_keep(self, seq: int, n_keep: int) -> None:
        """Drop sequence `seq`'s positions >= n_keep (0 frees the sequence)."""
        lib = self._require()
        tokens = self._seq(seq)
        n_keep = max(0, min(n_keep, len(tokens)))
        if n_keep == len(tokens):
            return
        if not lib.llama_memory_seq_rm(self._mem, seq, n_keep, -1):
            lib.llama_memory_seq_rm(self._mem, seq, -1, -1)  # partial removal unsupported (recurrent)
            n_keep = 0
        del tokens[n_keep:]

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        """Give the empty sequence `dst` the first n positions of `src` without computing them again."""
        lib = self._require()
        source, target = self._seq(src), self._seq(dst)
        if src == dst or not 0 < n <= len(source):
            raise ValueError(f"seq_copy({src}, {dst}, {n}): needs two sequences and 0 < n <= {len(source)}")
        if target:
            self.seq_keep(dst, 0)
        # Across KV streams llama.cpp copies a whole stream (a partial range would abort the process
        # in a GGML_ASSERT): copy all of src, then cut dst back to n. The copy runs at the next decode.
        lib.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        target[:] = source
        self.seq_keep(dst, n)

    def reset_batch(self) -> None:
        """Free every sequence, sequence 0 included."""
        lib = self._require()
        lib.llama_memory_clear(self._mem, True)
        for tokens in self._seqs:
            tokens.clear()
