"""Tool calling: tools render as each model's own template writes them (or in the generic format),
grammars accept the calls a tool allows and refuse the rest, replies parse back into calls."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from localllm.chat_template import CHATML_FALLBACK, GEMMA_FALLBACK, PLAIN_FALLBACK, ChatFormatter
from localllm.errors import GenerationError, InvalidOptionError, InvalidOptionTypeError
from localllm.tools import (
    TOOL_FORMATS,
    ToolCall,
    ToolChoice,
    check_tool_choice,
    check_tools,
    new_call_id,
    parse_tool_calls,
    tool_format,
    tool_grammar,
    tool_messages,
)

TEMPLATES = Path(__file__).parent / "fixtures" / "templates"
# file, BOS and EOS text as the models' tokenizer configs give them
MODELS = {
    "qwen2.5": ("qwen2.5-instruct.jinja", "", "<|im_end|>"),
    "llama3.2": ("llama-3.2-instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "mistral-nemo": ("mistral-nemo-instruct-2407.jinja", "<s>", "</s>"),
}
FORMAT_OF = {"qwen2.5": "hermes", "llama3.2": "llama3", "mistral-nemo": "mistral"}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
# a bare function (no "type"/"function" wrapper) and one without parameters
TIME = {"name": "get_time", "description": "The time now."}
TOOLS = [WEATHER, TIME]

# OpenAI's history of a call: the arguments as a JSON string, content None, a "tool" result
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "It is 21 degrees."},
    {"role": "user", "content": "Thanks!"},
]


def template(model: str) -> ChatFormatter:
    name, bos, eos = MODELS[model]
    return ChatFormatter((TEMPLATES / name).read_text(encoding="utf-8"), "gguf", bos, eos)


def reference_render(formatter: ChatFormatter, messages, **variables) -> str:
    """The template rendered as transformers' apply_chat_template renders it, in plain Jinja."""
    import jinja2
    from jinja2.ext import loopcontrols

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(formatter.template).render(
        messages=messages,
        add_generation_prompt=True,
        bos_token=formatter.bos_token,
        eos_token=formatter.eos_token,
        **variables,
    )


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_template_rendered_tools_prompt_equals_the_templates_own_output(model):
    f = template(model)
    assert f.takes_tools
    fmt = tool_format(f.template, takes_tools=f.takes_tools)
    assert fmt.name == FORMAT_OF[model]
    conversations = [CONVERSATION[:2], CONVERSATION[1:2], CONVERSATION]
    if model == "mistral-nemo":  # its template wants the system message only before a last user turn
        conversations = [CONVERSATION[:2], CONVERSATION[1:2], CONVERSATION[1:]]
    if model == "llama3.2":  # its template puts the tools into the first user turn
        conversations = [CONVERSATION[:2], CONVERSATION[1:2], CONVERSATION[:4]]
    for conversation in conversations:
        messages, tools = tool_messages(conversation, TOOLS, fmt, takes_tools=True)
        assert tools == list(check_tools(TOOLS))
        assert f.render(messages, tools=tools) == reference_render(f, messages, tools=tools)
    # without tools the template sees no `tools` at all, as before
    plain = CONVERSATION[:2]
    assert f.render(plain) == f.render(plain, tools=None) == reference_render(f, plain)
    assert f.render(plain) != f.render(plain, tools=check_tools(TOOLS))


def test_qwen_writes_past_calls_and_results_as_its_authors_meant():
    f = template("qwen2.5")
    as_dict = copy.deepcopy(CONVERSATION)
    as_dict[2]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris"}
    expected = (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call><|im_end|>\n"
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\nIt is 21 degrees.<|im_end|>\n"
    )
    for conversation in (CONVERSATION, as_dict):  # arguments as OpenAI's JSON text, or as a dict
        before = copy.deepcopy(conversation)
        messages, tools = tool_messages(conversation, TOOLS, TOOL_FORMATS["hermes"], takes_tools=True)
        prompt = f.render(messages, tools=tools)
        assert expected in prompt
        assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt
        assert conversation == before  # the caller's messages are left as they were


def test_mistral_gets_nine_character_ids_that_match_between_call_and_result():
    messages, _ = tool_messages(CONVERSATION[1:], TOOLS, TOOL_FORMATS["mistral"], takes_tools=True)
    call_id = messages[1]["tool_calls"][0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", call_id) and messages[2]["tool_call_id"] == call_id
    prompt = template("mistral-nemo").render(messages, tools=check_tools(TOOLS))
    assert f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {{"city": "Paris"}}, "id": "{call_id}"}}]</s>' in prompt
    assert f'[TOOL_RESULTS]{{"content": {{"temp": 21}}, "call_id": "{call_id}"}}[/TOOL_RESULTS]' in prompt


@pytest.mark.parametrize("fallback", [CHATML_FALLBACK, GEMMA_FALLBACK, PLAIN_FALLBACK])
def test_templates_without_tool_support_do_not_take_tools(fallback):
    f = ChatFormatter(fallback, "fallback")
    assert not f.takes_tools
    assert tool_format(f.template, takes_tools=f.takes_tools).name == "generic"


def test_the_generic_format_describes_the_tools_and_writes_calls_and_results_as_text():
    f = ChatFormatter(CHATML_FALLBACK, "fallback-chatml")
    fmt = tool_format(f.template, takes_tools=f.takes_tools)
    history = CONVERSATION[:4] + [{"role": "tool", "tool_call_id": "call_2", "content": "sunny"}]
    history += [{"role": "user", "content": "And tomorrow?"}]
    messages, tools = tool_messages(history, TOOLS, fmt, takes_tools=False)
    assert tools is None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert system.startswith("Be brief.\n\n# Tools")  # merged into the caller's system message
    for tool in check_tools(TOOLS):
        assert json.dumps(tool) in system
    assert '<tool_call>\n{"name": "function name", "arguments": {"argument name": value}}\n</tool_call>' in system
    prompt = f.render(messages, tools=tools)
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' in prompt
    # results in a row, and the user message after them, are one user turn
    assert (
        '<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n'
        "<tool_response>\nsunny\n</tool_response>\n\nAnd tomorrow?<|im_end|>\n"
    ) in prompt
    # no system message of the caller's: one is put first; a reply with text keeps it before the call
    messages, _ = tool_messages(
        [CONVERSATION[1], {**CONVERSATION[2], "content": "Checking."}], TOOLS, fmt, takes_tools=False
    )
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("# Tools")
    assert messages[2]["content"].startswith("Checking.\n<tool_call>\n")
    # the generic format's replies parse back
    text, calls = parse_tool_calls(messages[2]["content"], fmt)
    assert text == "Checking." and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_tool_format_follows_the_templates_markers_and_the_vocabulary():
    qwen = template("qwen2.5").template
    assert tool_format(qwen, takes_tools=False).name == "generic"  # a template that renders no tools
    assert tool_format(None, takes_tools=True).name == "generic"
    assert tool_format("{{ tools }}", takes_tools=True).name == "generic"  # a format not known here
    assert tool_format(qwen, takes_tools=True).special == ()
    vocab = {"<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>"}
    assert tool_format(qwen, takes_tools=True, has_token=vocab.__contains__).special == (
        ("<tool_call>", "<tool_call>"),
        ("</tool_call>", "</tool_call>"),
    )
    nemo = template("mistral-nemo").template
    assert tool_format(nemo, takes_tools=True, has_token=vocab.__contains__).special == ()  # no id known
    ids = {"[TOOL_CALLS]": 5}.get
    assert tool_format(nemo, takes_tools=True, has_token=vocab.__contains__, token_id=ids).special == (
        ("[TOOL_CALLS]", "<[5]>"),
    )
    llama = tool_format(template("llama3.2").template, takes_tools=True, has_token=vocab.__contains__)
    assert llama.trigger == "{" and llama.special == (("<|python_tag|>", "<|python_tag|>"),)


def test_malformed_calls_in_the_history_are_named():
    bad = {**CONVERSATION[2], "tool_calls": [{**CALL, "function": {"name": "get_weather", "arguments": "{oops"}}]}
    with pytest.raises(InvalidOptionError, match=r"messages\[0\]\['tool_calls'\]\[0\]\['function'\]\['arguments'\]"):
        tool_messages([bad], TOOLS, TOOL_FORMATS["hermes"], takes_tools=True)
    with pytest.raises(InvalidOptionError, match=r"messages\[1\]\['tool_calls'\]\[0\] must be a call"):
        tool_messages(
            [CONVERSATION[1], {**bad, "tool_calls": [{"id": "x"}]}], TOOLS, TOOL_FORMATS["generic"], takes_tools=False
        )


# --- grammars ------------------------------------------------------------------------------

SPECIAL = ("<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "<|eot|>")
# multi-byte tokens, some spanning the boundary between markup and JSON as real vocabularies' do
PIECES = ['{"', '":', '": ', '", ', '"}', '\n{"', "}\n", "name", "arguments", "parameters", "get", "_weather"]
PIECES += ["city", "Paris", "<tool", "_call>", "</", "}}", '"name": "', ">\n", "]\n"]


class ByteTokenizer:
    """All 256 bytes, a few longer pieces, and special tokens (llguidance marks them with a 0xff byte)."""

    def __init__(self) -> None:
        pieces = [p.encode() for p in PIECES]
        self.tokens = [bytes([b]) for b in range(256)] + pieces + [b"\xff" + s.encode() for s in SPECIAL]
        self.special_token_ids = list(range(256 + len(pieces), len(self.tokens)))
        self.eos_token_id = self.special_token_ids[-1]
        self.bos_token_id = None
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def __call__(self, data: bytes) -> list[int]:  # greedy longest match
        out, i = [], 0
        while i < len(data):
            best = max((t for t in self.ids if data.startswith(t, i)), key=len)
            out.append(self.ids[best])
            i += len(best)
        return out


@pytest.fixture(scope="module")
def tok():
    import llguidance

    raw = ByteTokenizer()
    return raw, llguidance.LLTokenizer(llguidance.TokenizerWrapper(raw))


def special_format(name: str, raw: ByteTokenizer):
    """The format as tool_format gives it for a vocabulary where its markers are special tokens."""
    ids = {s: raw.ids[b"\xff" + s.encode()] for s in SPECIAL}
    base = {"hermes": "qwen2.5", "llama3": "llama3.2", "mistral": "mistral-nemo"}
    fmt = tool_format(template(base[name]).template, takes_tools=True, has_token=ids.__contains__, token_id=ids.get)
    assert fmt.name == name and fmt.special
    return fmt


def accepts(tok, grammar: str, reply: str, special: bool) -> bool:
    import llguidance

    raw, lltok = tok
    data = reply.encode()
    for marker in SPECIAL if special else ():
        data = data.replace(marker.encode(), b"\xff" + marker.encode())
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(raw(data)) and matcher.is_accepting()


def call_text(fmt, name="get_weather", arguments=None, **extra) -> str:
    body = json.dumps({"name": name, fmt.arguments_key: {"city": "Paris"} if arguments is None else arguments, **extra})
    if fmt.shape == "tagged":
        return f"<tool_call>\n{body}\n</tool_call>"
    if fmt.shape == "list":
        return f"[TOOL_CALLS][{body}]"
    return body


CHOICES = [ToolChoice("auto"), ToolChoice("required"), ToolChoice("function", "get_weather")]


# each format with its markers as text, and (but generic's) as the special tokens its models have
VARIANTS = [(name, False) for name in sorted(TOOL_FORMATS)] + [("hermes", True), ("llama3", True), ("mistral", True)]


@pytest.mark.parametrize("name, special", VARIANTS)
def test_every_format_and_choice_gives_a_grammar_llguidance_takes(tok, name, special):
    import llguidance

    fmt = special_format(name, tok[0]) if special else TOOL_FORMATS[name]
    for choice in CHOICES:
        grammar = tool_grammar(TOOLS, choice, fmt)
        assert grammar is not None
        assert llguidance.LLMatcher.validate_grammar(grammar) == ""
        assert llguidance.LLMatcher.validate_grammar(grammar, tok[1]) == ""
    assert tool_grammar(TOOLS, ToolChoice("none"), fmt) is None
    assert tool_grammar(TOOLS, "none", fmt) is None and tool_grammar([], "auto", fmt) is None


@pytest.mark.parametrize("name, special", VARIANTS)
def test_grammars_accept_the_calls_a_tool_allows_and_refuse_the_rest(tok, name, special):
    fmt = special_format(name, tok[0]) if special else TOOL_FORMATS[name]
    auto, required, forced = (tool_grammar(TOOLS, c, fmt) for c in CHOICES)
    good = call_text(fmt)
    other = call_text(fmt, "get_time", {})
    for grammar in (auto, required, forced):
        assert accepts(tok, grammar, good, special)
        assert accepts(tok, grammar, "\n" + good, special)
        assert accepts(tok, grammar, call_text(fmt, arguments={"city": "Rome", "days": 3}), special)
        assert not accepts(tok, grammar, call_text(fmt, "get_wether"), special)  # no such tool
        assert not accepts(tok, grammar, call_text(fmt, arguments={"city": 3}), special)  # wrong type
        assert not accepts(tok, grammar, call_text(fmt, arguments={"days": 3}), special)  # "city" is required
    assert accepts(tok, auto, other, special) and accepts(tok, required, other, special)
    assert not accepts(tok, forced, other, special)  # forced: that tool only
    # "auto" takes plain text, also text that mentions the trigger's pieces, and text around the calls
    assert accepts(tok, auto, "It is sunny in Paris.", special)
    assert accepts(tok, auto, "Use <tool calls> or tool_call> or [TOOL] in text.", special)
    assert accepts(tok, auto, "", special)
    for grammar in (required, forced):  # the reply is the call: no text before it, none after
        assert not accepts(tok, grammar, "It is sunny.", special)
        assert not accepts(tok, grammar, "Let me check. " + good, special)
        assert not accepts(tok, grammar, good + " Done.", special)
    if fmt.shape == "tagged":
        assert accepts(tok, auto, f"Let me check.\n{good}\n{other}\nDone.", special)
        assert accepts(tok, required, f"{good}\n{other}", special)
        assert not accepts(tok, forced, f"{good}\n{good}", special)  # exactly one call
        assert not accepts(tok, auto, "Let me check. <tool_call>\nnot json\n</tool_call>", special)
    if fmt.shape == "list":
        both = call_text(fmt)[:-1] + ", " + call_text(fmt, "get_time", {})[len("[TOOL_CALLS][") :]
        assert accepts(tok, auto, both, special) and accepts(tok, required, both, special)
        assert not accepts(tok, forced, both, special)
        assert accepts(tok, auto, "Checking. " + good, special)
        assert accepts(tok, auto, call_text(fmt, id="abcDEF123"), special)  # the id its history shows
    if fmt.shape == "json":  # a reply that starts with "{" is the call; other text is free
        assert not accepts(tok, auto, '{"answer": 42}', special)
        assert accepts(tok, auto, "The answer is {42}.", special)
        if special:
            assert accepts(tok, auto, "<|python_tag|>" + good, special)


def test_a_schema_llguidance_cannot_compile_names_its_tool():
    bad = {"name": "weird", "parameters": {"type": "object", "properties": {"x": {"type": "bogus"}}}}
    with pytest.raises(InvalidOptionError, match=r"tools\[1\] \('weird'\): llguidance cannot use its parameters"):
        tool_grammar([WEATHER, bad], "auto", TOOL_FORMATS["hermes"])
    # a forced call only needs its own tool's schema; unknown keywords are ignored
    assert tool_grammar(
        [WEATHER, bad], {"type": "function", "function": {"name": "get_weather"}}, TOOL_FORMATS["hermes"]
    )
    odd = {"name": "odd", "parameters": {"type": "object", "properties": {"u": {"type": "string", "format": "odd"}}}}
    assert tool_grammar([odd], "required", TOOL_FORMATS["hermes"])


def test_refs_to_definitions_still_resolve_inside_a_call(tok):
    person = {
        "name": "greet",
        "parameters": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"who": {"$ref": "#/$defs/Person"}},
            "required": ["who"],
            "$defs": {"Person": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}},
        },
    }
    fmt = TOOL_FORMATS["hermes"]
    grammar = tool_grammar([person], "required", fmt)
    assert accepts(tok, grammar, call_text(fmt, "greet", {"who": {"age": 3}}), False)
    assert not accepts(tok, grammar, call_text(fmt, "greet", {"who": {"age": "3"}}), False)


# --- parsing -------------------------------------------------------------------------------


def test_parse_hermes_calls_and_keep_the_text():
    fmt = TOOL_FORMATS["hermes"]
    reply = (
        'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": "{}"}\n</tool_call>'
    )
    text, calls = parse_tool_calls(reply, fmt)
    assert text == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert len({c.id for c in calls}) == 2 and all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls)
    # the reply may stop before the closing tag
    assert parse_tool_calls('<tool_call>\n{"name": "get_time", "arguments": {}}', fmt)[1][0].name == "get_time"
    assert parse_tool_calls("No calls here.", fmt) == ("No calls here.", ())


def test_parse_llama3_and_mistral_calls():
    llama = TOOL_FORMATS["llama3"]
    text, calls = parse_tool_calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome"}}', llama)
    assert text == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Rome"})]
    text, calls = parse_tool_calls('{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}', llama)
    assert [(c.name, c.arguments) for c in calls] == [("a", {}), ("b", {"x": 1})]
    for answer in ('{"answer": 42}', "Hello {there}", '{"name": "Bob", "age": 3}', "{not json at all"):
        assert parse_tool_calls(answer, llama) == (answer, ())  # JSON (or braces) that is no call is text
    mistral = TOOL_FORMATS["mistral"]
    reply = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "abcDEF123"}, '
    reply += '{"name": "get_time", "arguments": {}}]'
    text, calls = parse_tool_calls(reply, mistral)
    assert text == "" and [c.name for c in calls] == ["get_weather", "get_time"]
    assert calls[0].arguments == {"city": "Oslo"}
    assert parse_tool_calls('Sure. [TOOL_CALLS] {"name": "get_time", "arguments": {}}', mistral)[0] == "Sure."


@pytest.mark.parametrize(
    "name, reply",
    [
        ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\n</tool_call>'),
        ("generic", "<tool_call>\nnot json\n</tool_call>"),
        ("llama3", '{"name": "get_weather", "parameters": {"city": '),
        ("llama3", "<|python_tag|>{broken"),
        ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}'),
    ],
)
def test_a_call_that_is_not_json_is_a_generation_error_that_quotes_it(name, reply):
    with pytest.raises(GenerationError, match="not valid JSON") as err:
        parse_tool_calls(reply, TOOL_FORMATS[name])
    assert "get_weather" in str(err.value) or "json" in str(err.value) or "broken" in str(err.value)
    long = "<tool_call>\n{" + "x" * 1000 + "\n</tool_call>"
    with pytest.raises(GenerationError) as err:
        parse_tool_calls(long, TOOL_FORMATS["hermes"])
    assert len(str(err.value)) < 400


def test_a_call_without_a_name_or_with_arguments_that_are_no_object_is_an_error():
    with pytest.raises(GenerationError, match="without a function name"):
        parse_tool_calls('<tool_call>\n{"arguments": {}}\n</tool_call>', TOOL_FORMATS["hermes"])
    with pytest.raises(GenerationError, match="without a function name"):
        parse_tool_calls('[TOOL_CALLS][{"name": "f", "arguments": [1]}]', TOOL_FORMATS["mistral"])


def test_tool_call_to_openai():
    call = ToolCall(new_call_id(), "get_weather", {"city": "Zürich"})
    out = call.to_openai()
    assert out == {
        "id": call.id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
    }
    assert json.loads(out["function"]["arguments"]) == call.arguments and re.fullmatch(r"call_[0-9a-f]{24}", call.id)


# --- checks --------------------------------------------------------------------------------


def test_check_tools_normalises_to_openais_form():
    weather, time = check_tools(TOOLS)
    assert weather == WEATHER and weather is not WEATHER
    assert time == {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time now.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    assert check_tools(None) == () and check_tools([]) == ()
    assert check_tools(check_tools(TOOLS)) == check_tools(TOOLS)


@pytest.mark.parametrize(
    "tools, error, where",
    [
        ("get_weather", InvalidOptionTypeError, "tools must be a list"),
        ([WEATHER, 3], InvalidOptionTypeError, r"tools\[1\] must be a dict"),
        ([{"type": "retrieval"}], InvalidOptionError, r"tools\[0\]\['type'\] is 'retrieval'"),
        ([{"type": "function", "function": "f"}], InvalidOptionError, r"tools\[0\]\['function'\] must be a dict"),
        ([{"name": "has space"}], InvalidOptionError, r"tools\[0\]\['name'\] is 'has space'"),
        ([{"name": "x" * 65}], InvalidOptionError, r"tools\[0\]\['name'\]"),
        ([{"type": "function", "function": {}}], InvalidOptionError, r"tools\[0\]\['function'\]\['name'\] is None"),
        ([TIME, {"name": "get_time"}], InvalidOptionError, r"tools\[1\]\['name'\] 'get_time' is tools\[0\]'s"),
        ([{"name": "f", "description": 3}], InvalidOptionError, r"tools\[0\]\['description'\] must be text"),
        ([{"name": "f", "parameters": "x"}], InvalidOptionError, r"tools\[0\]\['parameters'\] must be a JSON schema"),
        ([{"name": "f", "parameters": {"type": "string"}}], InvalidOptionError, r"must be 'object'"),
        ([{"name": "f", "parameters": {"default": object()}}], InvalidOptionError, r"\['parameters'\] is not JSON"),
    ],
)
def test_check_tools_names_the_tool_and_field(tools, error, where):
    with pytest.raises(error, match=where) as err:
        check_tools(tools)
    assert err.value.option == "tools"


def test_check_tool_choice():
    assert check_tool_choice(None, TOOLS) == ToolChoice("auto")
    assert check_tool_choice(None, None) == ToolChoice("none")
    assert check_tool_choice("auto", []) == ToolChoice("none")
    for mode in ("auto", "none", "required"):
        assert check_tool_choice(mode, TOOLS) == ToolChoice(mode)
    forced = ToolChoice("function", "get_time")
    assert check_tool_choice({"type": "function", "function": {"name": "get_time"}}, TOOLS) == forced
    assert check_tool_choice({"type": "function", "name": "get_time"}, TOOLS) == forced  # the Responses API's form
    with pytest.raises(
        InvalidOptionError, match=r"'get_wether', which is not among the tools \(valid: 'get_weather', 'get_time'\)"
    ):
        check_tool_choice({"type": "function", "function": {"name": "get_wether"}}, TOOLS)
    with pytest.raises(InvalidOptionError, match="tool_choice is 'any'"):
        check_tool_choice("any", TOOLS)
    with pytest.raises(InvalidOptionError, match="'required' needs tools"):
        check_tool_choice("required", [])
    with pytest.raises(InvalidOptionError, match="names no function"):
        check_tool_choice({"type": "function"}, TOOLS)
    with pytest.raises(InvalidOptionTypeError, match="tool_choice must be text or a dict"):
        check_tool_choice(3, TOOLS)
    with pytest.raises(InvalidOptionError, match="not among the tools"):
        tool_grammar(TOOLS, ToolChoice("function", "nope"), TOOL_FORMATS["hermes"])
