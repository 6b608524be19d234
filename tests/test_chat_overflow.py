"""chat(overflow=...): conversations longer than the context window."""

from __future__ import annotations

import pytest

import localllm
from localllm.errors import ContextOverflowError

N_CTX = 256
REPLY = 16  # max_tokens of most requests here: the room kept for the reply
SYSTEM = {"role": "system", "content": "You are a cat."}


@pytest.fixture(scope="module")
def model(tiny_gguf, one_core):
    with localllm.load(tiny_gguf, context=N_CTX, hardware=one_core) as m:
        yield m


def turn(i: int, words: int = 3) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"question {i}: " + "the cat and the dog " * words},
        {"role": "assistant", "content": "yes " * 10},
    ]


def long_chat(n_turns: int = 8, last: str = "what is this") -> list[dict[str, str]]:
    return [SYSTEM, *(m for i in range(n_turns) for m in turn(i)), {"role": "user", "content": last}]


def greedy(**kw):
    return {"temperature": 0, "max_tokens": REPLY, **kw}


def test_by_default_a_long_conversation_is_an_error_that_says_what_to_do(model):
    msgs = long_chat()
    n = model.count_tokens(msgs)
    assert n > N_CTX
    with pytest.raises(ContextOverflowError) as err:
        model.chat(msgs, **greedy())
    e = err.value
    assert (e.n_prompt, e.n_ctx, e.max_tokens) == (n, N_CTX, REPLY)
    assert "overflow='truncate'" in str(e) and "context=N" in str(e) and "--ctx N" in str(e)
    with pytest.raises(ValueError, match="overflow"):
        model.chat(msgs, overflow="drop")


def test_truncate_keeps_the_system_message_and_the_newest_turns_that_fit(model):
    msgs = long_chat()
    chunks = list(model.chat_stream(msgs, overflow="truncate", **greedy()))
    dropped = chunks[-1].dropped_messages
    assert dropped > 0 and dropped % 2 == 0  # whole turns: a user message and its reply
    assert all(c.dropped_messages == 0 for c in chunks[:-1])
    kept = [SYSTEM, *msgs[1 + dropped :]]
    assert kept[-1] == msgs[-1]  # the last user message is never dropped
    reply = model.chat(msgs, overflow="truncate", **greedy())
    assert reply.dropped_messages == dropped and reply.text == "".join(c.text for c in chunks)
    # the prompt is exactly the kept messages, with room for the reply; one more turn would not fit
    assert reply.prompt_tokens == model.count_tokens(kept)
    assert reply.prompt_tokens + REPLY <= N_CTX
    assert model.count_tokens([SYSTEM, *msgs[1 + dropped - 2 :]]) + REPLY > N_CTX
    # the same reply as asking with the kept messages only
    direct = model.chat(kept, **greedy())
    assert (direct.token_ids, direct.dropped_messages) == (reply.token_ids, 0)


def test_a_conversation_that_fits_loses_nothing(model):
    msgs = long_chat(n_turns=1)
    assert model.count_tokens(msgs) + REPLY <= N_CTX
    assert model.chat(msgs, overflow="truncate", **greedy()).dropped_messages == 0
    assert model.chat(msgs, **greedy()).dropped_messages == 0


def test_a_huge_max_tokens_does_not_crowd_out_the_conversation(model):
    msgs = long_chat(n_turns=1)
    n = model.count_tokens(msgs)
    assert N_CTX // 2 < n <= N_CTX - N_CTX // 4  # fits with a quarter of the window for the reply
    for max_tokens in (None, 100_000):
        reply = model.chat(msgs, overflow="truncate", temperature=0, max_tokens=max_tokens)
        assert reply.dropped_messages == 0 and reply.prompt_tokens == n
    # the room kept is at most a quarter of the window, at least what max_tokens asks when smaller
    long = long_chat()
    capped = model.chat(long, overflow="truncate", temperature=0, max_tokens=None).prompt_tokens
    assert capped + N_CTX // 4 <= N_CTX


def test_the_cache_keeps_the_system_message_across_the_cut(model):
    system_tokens = model.tokenize(model.render_chat([SYSTEM], add_generation_prompt=False), add_bos=True)
    msgs = long_chat()
    first = model.chat(msgs, overflow="truncate", **greedy())
    # next turn: the cut stays where it was, so the whole previous prompt is reused
    msgs += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "ok"}]
    same_cut = model.chat(msgs, overflow="truncate", **greedy())
    assert same_cut.dropped_messages == first.dropped_messages
    assert same_cut.timings.cached_tokens >= first.prompt_tokens - 1
    # a long new message moves the cut: only the system message's prefix survives, and is reused
    msgs += [{"role": "assistant", "content": same_cut.text}, {"role": "user", "content": "the moon and the sun " * 6}]
    moved = model.chat(msgs, overflow="truncate", **greedy())
    assert moved.dropped_messages > same_cut.dropped_messages
    assert len(system_tokens) <= moved.timings.cached_tokens < moved.prompt_tokens


def test_the_last_user_message_is_kept_or_the_error_says_why(model):
    too_long = {"role": "user", "content": "hello world " * 40}
    n = model.count_tokens([SYSTEM, too_long])
    assert n > N_CTX
    with pytest.raises(ContextOverflowError) as err:
        model.chat([*long_chat(2)[:-1], too_long], overflow="truncate", **greedy())
    e = err.value
    assert (e.n_prompt, e.n_ctx) == (n, N_CTX)
    assert "system message and the last user message" in str(e) and str(n) in str(e)
    assert "context=N" in str(e) and "--ctx N" in str(e)
    with pytest.raises(ContextOverflowError, match="the last user message alone is"):
        model.chat([too_long], overflow="truncate", **greedy())


def test_truncate_never_refuses_what_error_accepts(model):
    # the kept messages fit the window but leave less than max_tokens: the reply runs to the window
    big = {"role": "user", "content": "the cat and the dog " * 16}
    msgs = [SYSTEM, *turn(0), big]
    n_kept = model.count_tokens([SYSTEM, big])
    assert n_kept + REPLY > N_CTX > n_kept and model.count_tokens(msgs) > N_CTX
    reply = model.chat(msgs, overflow="truncate", temperature=0, max_tokens=REPLY)
    assert reply.dropped_messages == 2 and reply.prompt_tokens == n_kept
    assert reply.finish_reason in ("length", "eos") and reply.prompt_tokens + reply.completion_tokens <= N_CTX


# --- the real model: its own template and tokenizer -------------------------------------

REAL_TURNS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("And of Italy?", "The capital of Italy is Rome."),
    ("Name a large river in Europe.", "The Danube is one of the largest rivers in Europe."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("What is two plus three?", "Two plus three is five."),
]


def test_truncation_on_a_real_chat_template(smollm2_gguf, one_core):
    system = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."}
    msgs = [system]
    for q, a in REAL_TURNS * 2:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": "What is the capital of Spain?"})
    with localllm.load(smollm2_gguf, context=256, hardware=one_core) as m:
        assert m.count_tokens(msgs) > 256
        reply = m.chat(msgs, overflow="truncate", temperature=0, max_tokens=24)
        assert reply.dropped_messages > 0 and reply.dropped_messages % 2 == 0
        kept = [system, *msgs[1 + reply.dropped_messages :]]
        assert reply.prompt_tokens == m.count_tokens(kept) and reply.prompt_tokens + 24 <= 256
        assert "<|im_" not in reply.text and reply.text.strip()
        # the next question moves the cut; the system message's tokens come from the cache
        msgs += [
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": "And what is the capital of Portugal? " * 2},
        ]
        system_tokens = m.tokenize(m.render_chat([system], add_generation_prompt=False), add_bos=True)
        moved = m.chat(msgs, overflow="truncate", temperature=0, max_tokens=24)
        assert moved.dropped_messages > reply.dropped_messages
        assert moved.timings.cached_tokens >= len(system_tokens)


def test_fit_chat_says_what_truncate_will_send_without_generating(model):
    """The TUI's context figure: the same prompt size and drop count chat(overflow="truncate") uses."""
    for msgs in (long_chat(), long_chat(2), [SYSTEM, {"role": "user", "content": "hi"}]):
        reply = model.chat(msgs, overflow="truncate", **greedy())
        assert model.fit_chat(msgs, **greedy()) == (reply.prompt_tokens, reply.dropped_messages)
    assert model.fit_chat(long_chat(), **greedy())[1] > 0
    with pytest.raises(ContextOverflowError):  # as chat: the last user message alone is too long
        model.fit_chat([{"role": "user", "content": "the cat " * 400}], **greedy())
