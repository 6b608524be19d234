"""Fallback chat formats for models without a template: each renders as its family's own
template does, and is chosen from the vocabulary (and architecture) of a real GGUF."""

from __future__ import annotations

import logging

import pytest

import localllm
from localllm.chat_template import (
    CHATML_FALLBACK,
    GEMMA_FALLBACK,
    LLAMA3_FALLBACK,
    PLAIN_FALLBACK,
    chat_formatter,
    split_turns,
)
from localllm.errors import ChatTemplateError
from localllm.testing import write_llama_gguf

# A multi-turn conversation with a system message; the content has edge whitespace, which
# Gemma's and Llama-3's templates trim and ChatML's keeps.
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there "},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
]

# Written by hand from the published formats.
EXPECTED = {
    # Qwen2.5 / SmolLM2: <|im_start|>role\ncontent<|im_end|>\n, no BOS text
    "fallback-chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi there <|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    ),
    # Gemma 3: <bos>, the system message folded into the first user turn, "model" for the assistant
    "fallback-gemma": (
        "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    ),
    # Llama 3: <|begin_of_text|>, then a header per message, each ended by <|eot_id|>
    "fallback-llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "fallback-plain": "Be brief.\n\nUser: Hi there \nAssistant: Hello!\nUser: What is 2+2?\nAssistant:",
}
BOS = {
    "fallback-chatml": "<|im_start|>",
    "fallback-gemma": "<bos>",
    "fallback-llama3": "<|begin_of_text|>",
    "fallback-plain": "<s>",
}

# The families' own templates, as published (google/gemma-3-1b-it, without the image branch;
# meta-llama/Meta-Llama-3-8B-Instruct): the fallbacks must render exactly as these do.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

VOCAB = {
    "fallback-chatml": {"<|im_start|>", "<|im_end|>"},
    "fallback-gemma": {"<start_of_turn>", "<end_of_turn>"},
    "fallback-llama3": {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
    "fallback-plain": set(),
}


@pytest.mark.parametrize("source", sorted(EXPECTED))
def test_each_fallback_renders_its_familys_format(source):
    f = chat_formatter(None, bos_token=BOS[source], has_token=VOCAB[source].__contains__)
    assert f.source == source and "no chat template" in f.reason
    assert f.render(CONVERSATION) == EXPECTED[source]
    # without the generation prompt the conversation ends after the last user turn
    assert EXPECTED[source].startswith(f.render(CONVERSATION, add_generation_prompt=False))


@pytest.mark.parametrize(
    "source, official", [("fallback-gemma", GEMMA3_TEMPLATE), ("fallback-llama3", LLAMA3_TEMPLATE)]
)
def test_fallbacks_render_as_the_official_templates(source, official):
    own = chat_formatter(official, bos_token=BOS[source])
    assert own.source == "gguf"
    fallback = chat_formatter(None, bos_token=BOS[source], has_token=VOCAB[source].__contains__)
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[:2]):
        assert fallback.render(messages) == own.render(messages)
        assert fallback.render(messages, add_generation_prompt=False) == own.render(
            messages, add_generation_prompt=False
        )
    assert own.render(CONVERSATION) == EXPECTED[source]


def test_fallback_stop_strings_are_each_formats_end_of_turn():
    stops = {s: chat_formatter(None, has_token=VOCAB[s].__contains__).stop for s in EXPECTED}
    assert stops == {
        "fallback-chatml": ("<|im_end|>",),
        "fallback-gemma": ("<end_of_turn>",),
        "fallback-llama3": ("<|eot_id|>",),
        "fallback-plain": ("\nUser:",),
    }
    assert [chat_formatter(None, has_token=VOCAB[s].__contains__).template for s in sorted(EXPECTED)] == [
        CHATML_FALLBACK,
        GEMMA_FALLBACK,
        LLAMA3_FALLBACK,
        PLAIN_FALLBACK,
    ]


def test_the_architecture_breaks_a_tie_between_vocabularies():
    both = (VOCAB["fallback-chatml"] | VOCAB["fallback-gemma"] | VOCAB["fallback-llama3"]).__contains__
    assert chat_formatter(None, has_token=both).source == "fallback-chatml"  # ChatML tokens added on purpose
    assert chat_formatter(None, has_token=both, architecture="gemma3").source == "fallback-gemma"
    assert chat_formatter(None, has_token=both, architecture="llama").source == "fallback-llama3"
    # an architecture alone never picks a format whose tokens the vocabulary lacks
    assert chat_formatter(None, architecture="gemma2").source == "fallback-plain"
    broken = chat_formatter("{% for %}", has_token=VOCAB["fallback-gemma"].__contains__)
    assert broken.source == "fallback-gemma" and "broken" in broken.reason and "Gemma" in broken.reason


def test_split_turns_keeps_system_and_last_user_message():
    head, turns, tail = split_turns(CONVERSATION)
    assert head == CONVERSATION[:1] and turns == [CONVERSATION[1:3]] and tail == CONVERSATION[3:]
    msgs = [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "assistant", "content": "greeting"},
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "1a"},
        {"role": "tool", "content": "t"},
        {"role": "user", "content": "2"},
        {"role": "assistant", "content": "prefill"},
    ]
    head, turns, tail = split_turns(msgs)
    assert [m["content"] for m in head] == ["a", "b"]
    assert [[m["content"] for m in t] for t in turns] == [["greeting"], ["1", "1a", "t"]]
    assert [m["content"] for m in tail] == ["2", "prefill"]
    assert split_turns([{"role": "user", "content": "x"}]) == ([], [], [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError):
        split_turns([{"role": "user"}])


# --- on real GGUF files ---------------------------------------------------------------

# Tiny GGUFs with another family's special tokens in place of ChatML's (ids kept: BOS 1, turn end 4).
FAMILY_VOCABS = {
    "fallback-gemma": dict(
        rename_tokens={
            "<s>": "<bos>",
            "</s>": "<eos>",
            "<|im_start|>": "<start_of_turn>",
            "<|im_end|>": "<end_of_turn>",
        }
    ),
    "fallback-llama3": dict(
        rename_tokens={
            "<s>": "<|begin_of_text|>",
            "</s>": "<|end_of_text|>",
            "<|im_start|>": "<|start_header_id|>",
            "<|im_end|>": "<|eot_id|>",
        },
        extra_control_tokens=["<|end_header_id|>"],
    ),
    "fallback-chatml": dict(),
    "fallback-plain": dict(rename_tokens={"<|im_start|>": "<unused0>", "<|im_end|>": "<unused1>"}),
}


@pytest.mark.parametrize("source", sorted(FAMILY_VOCABS))
def test_a_gguf_without_template_gets_its_vocabularys_format(source, tmp_path, one_core, caplog):
    path = write_llama_gguf(tmp_path / f"{source}.gguf", seed=1, chat_template=None, **FAMILY_VOCABS[source])
    with caplog.at_level(logging.WARNING, logger="localllm.model"):
        m = localllm.load(path, context=256, hardware=one_core)
    with m:
        assert m.info.template_source == source and "no chat template" in m.info.template_note
        warnings = [r for r in caplog.records if r.name == "localllm.model" and source in r.getMessage()]
        assert len(warnings) == 1  # said once, at load
        messages = [dict(m_) for m_ in CONVERSATION]
        rendered = m.render_chat(messages)
        assert rendered == EXPECTED[source]
        # one BOS token, whether the template writes its text (Gemma, Llama-3) or not
        tokens = m._tokenize_prompt(rendered)
        assert tokens[0] == 1 and tokens.count(1) == 1
        if source == "fallback-plain":
            assert m._turn_end_tokens == frozenset()
            return
        # the end-of-turn control token ends the reply (it has no text a stop string could see)
        assert m._turn_end_tokens == frozenset({4})
        reply = m.chat(messages, temperature=1.0, seed=2, top_k=0, top_p=1.0, min_p=0.0, max_tokens=200)
        assert 4 not in reply.token_ids and reply.finish_reason in ("eos", "length", "stop")


def test_the_real_smollm2_template_renders_as_the_chatml_fallback(smollm2_gguf, one_core):
    with localllm.load(smollm2_gguf, context=512, hardware=one_core) as m:
        assert m.info.template_source == "gguf"
        fallback = chat_formatter(None, has_token=m._engine.has_token, architecture="llama")
        assert fallback.source == "fallback-chatml"  # were the template missing
        assert m.render_chat(CONVERSATION) == fallback.render(CONVERSATION) == EXPECTED["fallback-chatml"]


# --- the render limits change nothing for real templates ------------------------------


def _refuse(message: str) -> None:
    raise ValueError(message)


def _unbounded_render(template: str, messages, bos: str = "", eos: str = "", add_generation_prompt: bool = True):
    """The template rendered as Hugging Face transformers does: the plain immutable sandbox."""
    import json

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda v, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        v, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )
    env.globals["raise_exception"] = _refuse
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos
    )


def _long_conversation(n: int = 400) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "Be brief. ü ✓ 日本"}]
    for i in range(n):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": f" turn {i}: " + "words " * 50})
    return msgs


@pytest.mark.parametrize(
    "name, template",
    [
        ("gemma3", GEMMA3_TEMPLATE),
        ("llama3", LLAMA3_TEMPLATE),
        ("chatml", CHATML_FALLBACK),
        ("gemma", GEMMA_FALLBACK),
        ("llama3-fallback", LLAMA3_FALLBACK),
        ("plain", PLAIN_FALLBACK),
    ],
)
def test_bounded_rendering_matches_the_plain_sandbox(name, template):
    from localllm.chat_template import ChatFormatter

    f = ChatFormatter(template, "gguf", bos_token="<bos>", eos_token="<eos>")
    for messages in (CONVERSATION, CONVERSATION[1:], _long_conversation()):
        for gen in (True, False):
            assert f.render(messages, add_generation_prompt=gen) == _unbounded_render(
                template, messages, "<bos>", "<eos>", gen
            )


def test_the_real_smollm2_template_renders_as_in_the_plain_sandbox(smollm2_gguf, one_core):
    with localllm.load(smollm2_gguf, context=512, hardware=one_core) as m:
        template = m._engine.chat_template
        assert m.info.template_source == "gguf" and template
        for messages in (CONVERSATION, _long_conversation()):
            assert m.render_chat(messages) == _unbounded_render(
                template, messages, m._engine.bos_token or "", m._engine.eos_token or ""
            )


def test_hybrid_reasoning_templates_answer_without_thinking_first():
    # Qwen3's template (the generation-prompt part, as its GGUFs ship it) opens an empty think
    # block when enable_thinking is false, so the model answers at once; a template that does
    # not know the name renders as before
    from localllm.chat_template import ENABLE_THINKING

    qwen3 = (
        "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}"
        "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
        "{%- endif %}"
    )
    text = chat_formatter(qwen3).render([{"role": "user", "content": "Hi"}])
    assert ENABLE_THINKING is False
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    plain = chat_formatter(qwen3.replace("enable_thinking", "other_flag")).render([{"role": "user", "content": "Hi"}])
    assert plain.endswith("<|im_start|>assistant\n")
