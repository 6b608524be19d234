"""Reading and checking ONNX LLM folders as they are published (onnx-community, optimum, genai).

    config.json  generation_config.json  tokenizer.json  tokenizer_config.json
    [chat_template.jinja]  [genai_config.json]
    onnx/model.onnx (+ model.onnx_data)  onnx/model_fp16.onnx  onnx/model_q4.onnx ...

`validate_onnx_folder` parses the chosen `.onnx` graph with `onnx` (without loading its
weights), checks its input/output names against what the decoder loop feeds, and checks
that every external-data file is there and long enough. Anything wrong is an
`InvalidModelError` naming the file and what is wrong. No onnxruntime here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm.errors import InvalidModelError, RuntimeUnavailableError

__all__ = ["OnnxFolderInfo", "OnnxIO", "find_onnx_files", "is_onnx_folder", "pick_onnx_file", "validate_onnx_folder"]

# Preference when a folder holds several variants and none was asked for: the full
# precision export first (the reference), then the common quantized names of
# onnx-community (transformers.js) and optimum exports.
_PREFERRED = (
    "model.onnx",
    "decoder_model_merged.onnx",
    "model_fp16.onnx",
    "model_quantized.onnx",
    "model_int8.onnx",
    "model_uint8.onnx",
    "model_q4.onnx",
    "model_q4f16.onnx",
    "model_bnb4.onnx",
)
_OPTIONAL_INPUTS = ("attention_mask", "position_ids", "use_cache_branch", "num_logits_to_keep", "logits_to_keep")
_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16"}  # onnx.TensorProto elem types
_ITEMSIZE = {
    1: 4,
    2: 1,
    3: 1,
    4: 2,
    5: 2,
    6: 4,
    7: 8,
    9: 1,
    10: 2,
    11: 8,
    12: 4,
    13: 8,
    16: 2,
    17: 1,
    18: 1,
    19: 1,
    20: 1,
}
_TOKENIZER_HINT = (
    "copy tokenizer.json (and tokenizer_config.json) from the model's Hugging Face repository into the folder"
)


@dataclass(frozen=True)
class OnnxIO:
    """The decoder's input and output names, in layer order."""

    input_ids: str
    logits: str
    past_keys: tuple[str, ...]
    past_values: tuple[str, ...]
    present_keys: tuple[str, ...]
    present_values: tuple[str, ...]
    attention_mask: str | None = None
    position_ids: str | None = None
    use_cache_branch: str | None = None  # merged decoders (optimum) switch branches on it
    logits_to_keep: str | None = None


@dataclass(frozen=True)
class OnnxFolderInfo:
    """What a checked ONNX LLM folder holds."""

    folder: Path
    model_file: Path  # the decoder chosen and checked
    variants: tuple[Path, ...]  # every .onnx decoder in the folder
    data_files: tuple[Path, ...]  # external-data files of model_file
    weights_bytes: int  # model_file plus its external data
    tokenizer_file: Path
    io: OnnxIO
    n_layer: int
    n_head_kv: int | None  # from the graph's past input shape, else config.json
    head_dim: int | None
    kv_dtype: str  # float32 | float16 | bfloat16
    n_vocab: int | None
    context_length: int | None
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    eos_token_ids: tuple[int, ...]
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    generation_config: dict[str, Any] = field(default_factory=dict, repr=False)
    tokenizer_config: dict[str, Any] = field(default_factory=dict, repr=False)
    genai_config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def architecture(self) -> str | None:
        return self.config.get("model_type") or (self.genai_config or {}).get("model", {}).get("type")

    def kv_bytes_per_token(self) -> int | None:
        """KV-cache bytes per token of context: 2 · n_layer · n_head_kv · head_dim · bytes(dtype)."""
        if self.n_head_kv is None or self.head_dim is None:
            return None
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * (4 if self.kv_dtype == "float32" else 2)


def is_onnx_folder(path: str | Path) -> bool:
    """True for a folder holding .onnx files (top level or onnx/), or a path to a .onnx file."""
    p = Path(path)
    if p.is_file():
        return p.suffix == ".onnx"
    return p.is_dir() and bool(find_onnx_files(p))


def find_onnx_files(folder: Path) -> tuple[Path, ...]:
    """The .onnx files of a model folder: onnx/*.onnx and *.onnx at the top level."""
    found = [p for sub in (folder / "onnx", folder) if sub.is_dir() for p in sorted(sub.glob("*.onnx"))]
    return tuple(p for p in found if p.is_file())


def pick_onnx_file(
    folder: Path, variants: tuple[Path, ...], *, variant: str | None = None, genai: dict | None = None
) -> Path:
    """The decoder to load: `variant` (a file name or a suffix such as "q4"), genai_config's, or the preferred."""
    if not variants:
        raise InvalidModelError(
            f"{folder}: no .onnx file found (looked in {folder / 'onnx'} and {folder}); "
            "an ONNX LLM folder has onnx/model.onnx or similar",
            path=str(folder),
        )
    by_name = {p.name: p for p in variants}
    if variant:
        for name in (variant, f"{variant}.onnx", f"model_{variant}.onnx"):
            if name in by_name:
                return by_name[name]
        raise InvalidModelError(
            f"{folder}: no ONNX variant {variant!r}; the folder has {', '.join(sorted(by_name))}", path=str(folder)
        )
    filename = ((genai or {}).get("model", {}).get("decoder", {}) or {}).get("filename")
    if filename:
        p = folder / filename
        if not p.is_file():
            raise InvalidModelError(
                f"{folder / 'genai_config.json'} names decoder file {filename!r}, which is missing from the folder",
                path=str(p),
            )
        return p
    for name in _PREFERRED:
        if name in by_name:
            return by_name[name]
    return variants[0]


def _read_json(path: Path, *, required: bool = False) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise InvalidModelError(f"{path} is missing", path=str(path))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(f"{path} is not valid JSON ({exc}); download it again", path=str(path)) from exc
    if not isinstance(data, dict):
        raise InvalidModelError(f"{path} should hold a JSON object, not {type(data).__name__}", path=str(path))
    return data


def _token_text(value: Any) -> str | None:
    """tokenizer_config token fields are a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, tok_config: dict[str, Any]) -> str | None:
    jinja = folder / "chat_template.jinja"  # transformers >= 4.47 saves it on its own
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = tok_config.get("chat_template")
    if template is None:
        template = (_read_json(folder / "chat_template.json") or {}).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _int_list(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return []


def _load_graph(model_file: Path):
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"checking ONNX models needs the onnx package ({exc}); install it with: pip install onnx"
        ) from exc
    size = model_file.stat().st_size
    try:
        model = onnx.load_model(str(model_file), load_external_data=False)
    except Exception as exc:  # DecodeError, RuntimeWarning-as-error, ...: the bytes are not a ModelProto
        raise InvalidModelError(
            f"{model_file} ({size} bytes) is not a readable ONNX model: {type(exc).__name__}: {exc}. "
            "It is probably truncated (an interrupted download) or not ONNX at all: delete it and "
            "download it again",
            path=str(model_file),
        ) from exc
    if not model.graph.node or not model.graph.output:
        raise InvalidModelError(
            f"{model_file} ({size} bytes) holds an empty ONNX graph "
            f"({len(model.graph.node)} nodes, {len(model.graph.output)} outputs); it is "
            "probably truncated: download it again",
            path=str(model_file),
        )
    return model


def _subgraphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == 5:  # GRAPH
                yield from _subgraphs(attr.g)
            elif attr.type == 10:  # GRAPHS
                for g in attr.graphs:
                    yield from _subgraphs(g)


def _check_weights(model_file: Path, model) -> tuple[tuple[Path, ...], int]:
    """Every external-data file present and long enough; inline tensors the size their shape says."""
    sizes: dict[Path, int] = {}
    needed: dict[Path, tuple[int, str]] = {}
    for graph in _subgraphs(model.graph):
        for t in graph.initializer:
            n_elems = 1
            for d in t.dims:
                n_elems *= d
            expect = n_elems * _ITEMSIZE.get(t.data_type, 0)
            if t.data_location == 1:  # EXTERNAL
                info = {e.key: e.value for e in t.external_data}
                location = info.get("location")
                if not location:
                    raise InvalidModelError(
                        f"{model_file}: tensor {t.name!r} is stored externally but names no file", path=str(model_file)
                    )
                data = (model_file.parent / location).resolve()
                if model_file.parent.resolve() not in data.parents:
                    raise InvalidModelError(
                        f"{model_file}: tensor {t.name!r} points outside the model folder ({location!r}); refusing it",
                        path=str(model_file),
                    )
                end = int(info.get("offset", 0)) + int(info.get("length", expect))
                if end > needed.get(data, (0, ""))[0]:
                    needed[data] = (end, t.name)
            elif t.raw_data and expect and len(t.raw_data) != expect:
                raise InvalidModelError(
                    f"{model_file}: tensor {t.name!r} holds {len(t.raw_data)} bytes but its shape "
                    f"{list(t.dims)} needs {expect}; the file is damaged: download it again",
                    path=str(model_file),
                )
    for data, (end, tensor) in sorted(needed.items()):
        if not data.is_file():
            raise InvalidModelError(
                f"{model_file}: its weights file {data.name} is missing (tensor {tensor!r} is stored there); "
                f"download {data.name} into {data.parent}",
                path=str(data),
            )
        sizes[data] = data.stat().st_size
        if sizes[data] < end:
            raise InvalidModelError(
                f"{data} is truncated: {sizes[data]} bytes, but tensor {tensor!r} ends at byte {end} "
                f"({end - sizes[data]} bytes missing); download it again",
                path=str(data),
            )
    return tuple(sorted(sizes)), model_file.stat().st_size + sum(sizes.values())


def _io_names(model_file: Path, model, genai: dict | None) -> tuple[OnnxIO, Any]:
    dec = ((genai or {}).get("model", {}) or {}).get("decoder", {}) or {}
    gin, gout = dec.get("inputs", {}) or {}, dec.get("outputs", {}) or {}
    init_names = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in init_names}
    outputs = {o.name: o for o in model.graph.output}
    ids_name = gin.get("input_ids", "input_ids")
    logits_name = gout.get("logits", "logits")

    def pattern(template: str | None, default: str) -> re.Pattern:
        return re.compile(re.escape(template or default).replace("%d", r"(\d+)") + "$")

    pk = pattern(gin.get("past_key_names"), "past_key_values.%d.key")
    pv = pattern(gin.get("past_value_names"), "past_key_values.%d.value")
    ok = pattern(gout.get("present_key_names"), "present.%d.key")
    ov = pattern(gout.get("present_value_names"), "present.%d.value")

    def layered(names, pat) -> dict[int, str]:
        return {int(m.group(1)): n for n in names if (m := pat.match(n))}

    past_k, past_v = layered(inputs, pk), layered(inputs, pv)
    pres_k, pres_v = layered(outputs, ok), layered(outputs, ov)
    expected_in = (
        "input_ids, attention_mask, position_ids (optional) and "
        f"{pk.pattern[:-1].replace(chr(92), '')}/{pv.pattern[:-1].replace(chr(92), '')}"
    )
    problems = []
    if ids_name not in inputs:
        problems.append(f"no input {ids_name!r}")
    if logits_name not in outputs:
        problems.append(f"no output {logits_name!r}")
    if not past_k:
        problems.append(
            "no past_key_values.{i}.key/value inputs (a decoder exported without its KV cache; "
            "use a 'with past' export such as onnx/model.onnx of onnx-community)"
        )
    n_layer = max(past_k, default=-1) + 1
    for what, found in (
        ("past key", past_k),
        ("past value", past_v),
        ("present key", pres_k),
        ("present value", pres_v),
    ):
        missing = [i for i in range(n_layer) if i not in found]
        if past_k and missing:
            problems.append(f"{what} names missing for layer(s) {missing[:8]}")
    names_in = {gin.get(k, k) for k in _OPTIONAL_INPUTS} | {ids_name}
    unknown_in = sorted(
        n for n in inputs if n not in names_in and n not in past_k.values() and n not in past_v.values()
    )
    unknown_out = sorted(
        n for n in outputs if n != logits_name and n not in pres_k.values() and n not in pres_v.values()
    )
    if unknown_in:
        problems.append(f"unexpected input(s) {unknown_in}")
    if unknown_out:
        problems.append(f"unexpected output(s) {unknown_out}")
    if problems:
        raise InvalidModelError(
            f"{model_file} is not a decoder localllm can drive: {'; '.join(problems)}. Expected inputs "
            f"{expected_in}; outputs logits and present.{{i}}.key/value. Inputs found: {sorted(inputs)}; "
            f"outputs found: {sorted(outputs)}",
            path=str(model_file),
        )

    def opt(key: str) -> str | None:
        name = gin.get(key, key)
        return name if name in inputs else None

    io = OnnxIO(
        input_ids=ids_name,
        logits=logits_name,
        past_keys=tuple(past_k[i] for i in range(n_layer)),
        past_values=tuple(past_v[i] for i in range(n_layer)),
        present_keys=tuple(pres_k[i] for i in range(n_layer)),
        present_values=tuple(pres_v[i] for i in range(n_layer)),
        attention_mask=opt("attention_mask"),
        position_ids=opt("position_ids"),
        use_cache_branch=opt("use_cache_branch"),
        logits_to_keep=opt("num_logits_to_keep") or opt("logits_to_keep"),
    )
    return io, inputs[io.past_keys[0]]


def validate_onnx_folder(path: str | Path, *, variant: str | None = None) -> OnnxFolderInfo:
    """Check an ONNX LLM folder (or a .onnx file inside one) and describe it.

    Args:
        path: the model folder, or one of its .onnx files (which is then the decoder used).
        variant: a variant to pick in a folder: a file name ("model_q4.onnx") or suffix ("q4").

    Raises:
        InvalidModelError: a missing tokenizer, config or weights file, a truncated or
            unreadable .onnx, unexpected input/output names; the message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise InvalidModelError(f"{p} does not exist", path=str(p))
    if p.is_file():
        if p.suffix != ".onnx":
            raise InvalidModelError(f"{p} is not a .onnx file or a model folder", path=str(p))
        folder = p.parent.parent if p.parent.name == "onnx" else p.parent
        variants = find_onnx_files(folder)
        model_file = p
    else:
        folder = p
        variants = find_onnx_files(folder)
        model_file = None
        if not variants:
            pick_onnx_file(folder, variants)  # raises, naming where it looked

    genai = _read_json(folder / "genai_config.json")
    config = _read_json(folder / "config.json")
    if config is None and genai is None:
        raise InvalidModelError(
            f"{folder} has no config.json (or genai_config.json); copy config.json from the "
            "model's Hugging Face repository into the folder",
            path=str(folder / "config.json"),
        )
    config = config or {}
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        extra = [n for n in ("tokenizer.model", "vocab.json") if (folder / n).is_file()]
        found = f" (found {', '.join(extra)}, but localllm reads tokenizer.json)" if extra else ""
        raise InvalidModelError(
            f"{folder} has no tokenizer: tokenizer.json is missing{found}; {_TOKENIZER_HINT}", path=str(tokenizer_file)
        )
    try:
        json.loads(tokenizer_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(
            f"{tokenizer_file} is not valid JSON ({exc}); it is probably truncated: download it again",
            path=str(tokenizer_file),
        ) from exc
    tok_config = _read_json(folder / "tokenizer_config.json") or {}
    gen_config = _read_json(folder / "generation_config.json") or {}
    if model_file is None:
        model_file = pick_onnx_file(folder, variants, variant=variant, genai=genai)

    model = _load_graph(model_file)
    io, past_input = _io_names(model_file, model, genai)
    data_files, weights_bytes = _check_weights(model_file, model)

    dims = [d.dim_value if d.HasField("dim_value") else None for d in past_input.type.tensor_type.shape.dim]
    kv_dtype = _DTYPES.get(past_input.type.tensor_type.elem_type)
    if kv_dtype is None:
        raise InvalidModelError(
            f"{model_file}: KV-cache input {past_input.name!r} has element type "
            f"{past_input.type.tensor_type.elem_type}; localllm handles float32, float16 "
            "and bfloat16 caches",
            path=str(model_file),
        )
    if len(dims) != 4:
        raise InvalidModelError(
            f"{model_file}: KV-cache input {past_input.name!r} has {len(dims)} dimensions; "
            "expected [batch, kv_heads, sequence, head_dim]",
            path=str(model_file),
        )
    dec = ((genai or {}).get("model", {}) or {}).get("decoder", {}) or {}
    n_head_kv = (
        dims[1]
        or dec.get("num_key_value_heads")
        or config.get("num_key_value_heads")
        or config.get("num_attention_heads")
    )
    head_dim = (
        dims[3]
        or dec.get("head_size")
        or config.get("head_dim")
        or (
            config["hidden_size"] // config["num_attention_heads"]
            if config.get("hidden_size") and config.get("num_attention_heads")
            else None
        )
    )
    logits_out = next(o for o in model.graph.output if o.name == io.logits)
    logit_dims = logits_out.type.tensor_type.shape.dim
    n_vocab = (
        (logit_dims[-1].dim_value if logit_dims and logit_dims[-1].HasField("dim_value") else None)
        or config.get("vocab_size")
        or (genai or {}).get("model", {}).get("vocab_size")
    )
    context = (genai or {}).get("model", {}).get("context_length") or config.get("max_position_embeddings")

    eos_ids: list[int] = []
    for source in (
        gen_config.get("eos_token_id"),
        config.get("eos_token_id"),
        (genai or {}).get("model", {}).get("eos_token_id"),
    ):
        eos_ids += [i for i in _int_list(source) if i not in eos_ids]
    return OnnxFolderInfo(
        folder=folder,
        model_file=model_file,
        variants=variants,
        data_files=data_files,
        weights_bytes=weights_bytes,
        tokenizer_file=tokenizer_file,
        io=io,
        n_layer=len(io.past_keys),
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        kv_dtype=kv_dtype,
        n_vocab=n_vocab,
        context_length=context,
        chat_template=_chat_template(folder, tok_config),
        bos_token=_token_text(tok_config.get("bos_token")),
        eos_token=_token_text(tok_config.get("eos_token")),
        eos_token_ids=tuple(eos_ids),
        config=config,
        generation_config=gen_config,
        tokenizer_config=tok_config,
        genai_config=genai,
    )
