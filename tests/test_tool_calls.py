"""Tool calling through `Model.chat`: the real SmolLM2 in the generic format, tiny models with the
Qwen2.5 (hermes) and Mistral ([TOOL_CALLS] as a control token) templates, and ONNX Runtime; calls
come back parsed with arguments that hold to their schemas, and results round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import localllm
from localllm.errors import InvalidOptionError
from localllm.testing import write_llama_gguf

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 1000}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def smol(smollm2_gguf, one_core):
    m = localllm.load(smollm2_gguf, context=1024, hardware=one_core, parallel=4)
    yield m
    m.close()


def _valid(call) -> None:
    assert call.id.startswith("call_") and call.name in SCHEMAS
    jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_required_calls_at_temperature_one_all_hold_to_their_schemas(smol):
    outs = smol.chat_batch([ASK] * 12, tools=TOOLS, tool_choice="required", temperature=1.0, seed=list(range(12)))
    for c in outs:
        assert c.finish_reason == "tool_calls", (c.finish_reason, c.text)
        assert len(c.tool_calls) == 1 and c.text == ""  # one call ends the reply (parallel_tool_calls off)
        _valid(c.tool_calls[0])


def test_a_forced_function_and_auto_and_none(smol):
    forced = smol.chat(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}}, temperature=0)
    assert [c.name for c in forced.tool_calls] == ["add"]
    _valid(forced.tool_calls[0])
    auto = smol.chat(ASK, tools=TOOLS, temperature=0, max_tokens=80)  # the model may answer or call
    assert auto.finish_reason in ("tool_calls", "eos", "length")
    for call in auto.tool_calls:
        _valid(call)
    assert "<tool_call>" not in auto.text
    none = smol.chat(ASK, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=40)
    assert none.tool_calls == () and "get_weather" not in smol.render_chat(ASK, tools=TOOLS, tool_choice="none")


def test_the_generic_format_is_in_the_prompt_when_the_template_takes_no_tools(smol):
    prompt = smol.render_chat(ASK, tools=TOOLS)
    assert smol.info.template_source == "gguf" and "<tool_call>" in prompt and '"name": "get_weather"' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_call_streams_no_markup_and_comes_parsed_in_the_last_chunk(smol):
    chunks = list(smol.chat_stream(ASK, tools=TOOLS, tool_choice="required", temperature=0))
    assert all("<tool_call" not in c.text for c in chunks)
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].tool_calls
    assert sum(len(c.token_ids) for c in chunks) > 10  # the call's tokens are counted


def test_a_tool_result_round_trips(smol):
    call = smol.chat(ASK, tools=TOOLS, tool_choice="required", temperature=0).tool_calls[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21, "sky": "sunny"})},
    ]
    prompt = smol.render_chat(history, tools=TOOLS)
    assert json.dumps(call.arguments) in prompt or json.dumps(call.arguments, ensure_ascii=False) in prompt
    assert '<tool_response>\n{"temp_c": 21, "sky": "sunny"}\n</tool_response>' in prompt
    reply = smol.chat(history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=30)
    assert reply.finish_reason in ("eos", "length") and reply.text


def test_tools_with_a_schema_or_bad_tools_are_refused(smol):
    with pytest.raises(InvalidOptionError, match="tools and json_schema were both given"):
        smol.chat(ASK, tools=TOOLS, json_schema={"type": "object"})
    with pytest.raises(InvalidOptionError, match="not among the tools"):
        smol.chat(ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})
    with pytest.raises(InvalidOptionError, match=r"tools\[0\]"):
        smol.chat(ASK, tools=[{"type": "function", "function": {"name": "has space"}}])
    with pytest.raises(InvalidOptionError, match="not raw prompts"):
        smol.generate_batch(["hi"], tools=TOOLS)


def _template_gguf(tmp_path: Path, template: str, **kw) -> Path:
    return write_llama_gguf(tmp_path / "t.gguf", seed=3, chat_template=(TEMPLATES / template).read_text(), **kw)


def test_the_qwen_template_renders_tools_itself_and_calls_parse(tmp_path):
    import jinja2

    path = _template_gguf(tmp_path, "qwen2.5-instruct.jinja")
    with localllm.load(path) as m:
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)
        own = env.from_string((TEMPLATES / "qwen2.5-instruct.jinja").read_text()).render(
            messages=ASK, tools=TOOLS, add_generation_prompt=True
        )
        assert m.render_chat(ASK, tools=TOOLS) == own  # the template's own output
        for seed in range(3):  # random weights: only the grammar makes these calls
            c = m.chat(ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed, max_tokens=200)
            if c.incomplete:
                assert c.finish_reason == "length"
                continue
            assert c.finish_reason == "tool_calls"
            _valid(c.tool_calls[0])


def test_mistrals_control_token_trigger_is_seen_without_text(tmp_path):
    path = _template_gguf(tmp_path, "mistral-nemo-instruct-2407.jinja", extra_control_tokens=["[TOOL_CALLS]"])
    with localllm.load(path) as m:
        assert "[AVAILABLE_TOOLS]" in m.render_chat(ASK, tools=TOOLS)
        forced = {"type": "function", "function": {"name": "add"}}
        done = 0
        for seed in range(4):
            c = m.chat(ASK, tools=TOOLS, tool_choice=forced, temperature=1.0, seed=seed, max_tokens=200)
            if not c.incomplete:
                assert c.finish_reason == "tool_calls" and [t.name for t in c.tool_calls] == ["add"]
                _valid(c.tool_calls[0])
                done += 1
        assert done


def test_onnx_runtime_calls_tools_through_the_same_loop(tiny_onnx):
    with localllm.load(tiny_onnx) as m:
        forced = {"type": "function", "function": {"name": "add"}}
        c = m.chat(ASK, tools=TOOLS, tool_choice=forced, temperature=0, max_tokens=200)
        assert c.incomplete or (c.finish_reason == "tool_calls" and c.tool_calls[0].name == "add")


def test_llama3s_json_call_is_the_whole_reply(tmp_path):
    path = _template_gguf(tmp_path, "llama-3.2-instruct.jinja")
    with localllm.load(path) as m:
        assert '"parameters": dictionary' in m.render_chat(ASK, tools=TOOLS)  # Meta's own instructions
        done = 0
        for seed in range(4):
            c = m.chat(ASK, tools=TOOLS, tool_choice="required", temperature=1.0, seed=seed, max_tokens=200)
            if not c.incomplete:
                assert c.finish_reason == "tool_calls" and c.text == ""
                _valid(c.tool_calls[0])
                done += 1
        assert done
