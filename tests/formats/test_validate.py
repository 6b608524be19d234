"""Validation before llama.cpp: a malformed-file corpus built from a real tiny GGUF.

Every case is checked in a subprocess that runs our validation and then, only if it
passes, the real llama.cpp loader: a crash there would show as a dead subprocess, and a
case that slips past validation shows as "loaded" or a llama.cpp error.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from localllm.errors import InvalidModelError
from localllm.validate import (
    SUPPORTED_ARCHITECTURES,
    GGUFArray,
    _libllama_path,
    is_supported_architecture,
    refuse_pickle,
    validate_gguf,
    validate_model_path,
)

# Runs in a subprocess: validation, then llama.cpp only for files that pass.
_HARNESS = r"""
import json, sys
from localllm.errors import InvalidModelError
from localllm.validate import validate_model_path
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        validate_model_path(path)
    except InvalidModelError as exc:
        print(json.dumps({"path": path, "result": "invalid", "message": str(exc)}), flush=True)
        continue
    import llama_cpp
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_threads=1, verbose=False)
        del llm
        result, message = "loaded", ""
    except Exception as exc:
        result, message = "llama_error", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"path": path, "result": result, "message": message}), flush=True)
"""


def _run_harness(paths: list[Path]) -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _HARNESS, *map(str, paths)], capture_output=True, text=True, timeout=240
    )
    results, started = {}, None
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        else:
            results[Path(record["path"]).name] = record
    assert proc.returncode == 0, f"harness died (rc {proc.returncode}) while on {started}:\n{proc.stderr[-3000:]}"
    return results


# -- building the corpus -------------------------------------------------------------------


def _layout(path: Path):
    """Byte offsets of the parts of each field and tensor info of a valid file (via gguf's reader)."""
    import gguf

    reader = gguf.GGUFReader(path)

    def parts(field):
        offs, pos = [], field.offset
        for part in field.parts:
            offs.append(pos)
            pos += part.nbytes
        return offs

    fields = {name: parts(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: parts(t.field) for t in reader.tensors}
    return fields, tensors, reader


def _patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _rewrite(
    src: Path, dst: Path, *, arch: str | None = None, kv: dict | None = None, rename: dict | None = None
) -> Path:
    """Copy a GGUF through gguf's writer with metadata changes (kv: key -> (value, type, sub_type))."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = arch or str(reader.fields["general.architecture"].contents())
    w = gguf.GGUFWriter(str(dst), arch)
    kv = dict(kv or {})
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name in kv:
            w.add_key_value(name, *kv.pop(name))
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, field.contents(), vtype, sub)
    for name, args in kv.items():
        w.add_key_value(name, *args)
    for t in reader.tensors:
        w.add_tensor((rename or {}).get(t.name, t.name), t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def corpus(tiny_gguf, tmp_path_factory) -> dict[str, Path]:
    import gguf

    out = tmp_path_factory.mktemp("corpus")
    data = tiny_gguf.read_bytes()
    size = len(data)
    fields, tensors, reader = _layout(tiny_gguf)
    first_tensor = min(offs[0] for offs in tensors.values())
    data_start = reader.data_offset
    cases: dict[str, bytes | Path] = {}

    # truncated at many offsets: inside the header, the metadata, the tensor table, the data
    cut_points = sorted(
        {
            0,
            1,
            3,
            4,
            6,
            8,
            12,
            16,
            20,
            23,
            24,
            30,
            64,
            100,
            500,
            2000,
            5000,
            first_tensor - 1,
            first_tensor + 5,
            data_start - 1,
            data_start,
            data_start + 1,
            data_start + 4096,
            size // 2,
            size - 4096,
            size - 1,
        }
    )
    for cut in cut_points:
        cases[f"truncated-{cut}.gguf"] = data[:cut]

    cases["bad-magic.gguf"] = b"GGUG" + data[4:]
    cases["legacy-ggjt.gguf"] = b"tjgg" + data[4:]
    cases["version-1.gguf"] = _patch(data, 4, "<I", 1)
    cases["version-4.gguf"] = _patch(data, 4, "<I", 4)
    cases["version-big-endian.gguf"] = _patch(data, 4, ">I", 3)
    cases["version-huge.gguf"] = _patch(data, 4, "<I", 0xFFFFFFFF)
    cases["tensor-count-absurd.gguf"] = _patch(data, 8, "<Q", 2**62)
    cases["tensor-count-plus-one.gguf"] = _patch(data, 8, "<Q", len(tensors) + 1)
    cases["kv-count-absurd.gguf"] = _patch(data, 16, "<Q", 2**63 + 5)
    cases["kv-count-plus-one.gguf"] = _patch(data, 16, "<Q", len(fields) + 1)
    cases["kv-count-minus-one.gguf"] = _patch(data, 16, "<Q", len(fields) - 1)

    name = fields["general.name"]  # parts: key len, key, type, value len, value
    cases["string-length-huge.gguf"] = _patch(data, name[3], "<Q", 2**63)
    cases["string-length-past-end.gguf"] = _patch(data, name[3], "<Q", size)
    cases["key-length-huge.gguf"] = _patch(data, name[0], "<Q", 2**40)
    cases["key-empty.gguf"] = _patch(data, name[0], "<Q", 0)
    cases["value-type-unknown.gguf"] = _patch(data, name[2], "<I", 13)

    scores = fields["tokenizer.ggml.scores"]  # parts: key len, key, type, elem type, count, ...
    types = fields["tokenizer.ggml.token_type"]
    tokens = fields["tokenizer.ggml.tokens"]
    cases["scores-uint8.gguf"] = _patch(data, scores[3], "<I", 0)
    cases["scores-int32.gguf"] = _patch(data, scores[3], "<I", 5)
    cases["token-type-uint32.gguf"] = _patch(data, types[3], "<I", 4)
    cases["token-type-float32.gguf"] = _patch(data, types[3], "<I", 6)
    cases["tokens-int32.gguf"] = _patch(data, tokens[3], "<I", 5)
    cases["array-nested.gguf"] = _patch(data, scores[3], "<I", 9)
    cases["array-count-huge.gguf"] = _patch(data, scores[4], "<Q", 2**40)
    cases["tokens-count-huge.gguf"] = _patch(data, tokens[4], "<Q", 2**61)
    cases["token-length-huge.gguf"] = _patch(data, tokens[5], "<Q", 2**31 + 7)

    embd = tensors["token_embd.weight"]  # parts: name len, name, n_dims, dims, type, offset
    last = max(tensors.values(), key=lambda offs: offs[0])
    second = sorted(tensors.values(), key=lambda offs: offs[0])[1]
    cases["n-dims-5.gguf"] = _patch(data, embd[2], "<I", 5)
    cases["dims-overflow.gguf"] = _patch(_patch(data, embd[3], "<Q", 2**40), embd[3] + 8, "<Q", 2**40)
    cases["dim-negative.gguf"] = _patch(data, embd[3], "<Q", 2**64 - 64)
    cases["dims-too-big-for-file.gguf"] = _patch(data, embd[3] + 8, "<Q", 554 * 1000)
    cases["ggml-type-removed.gguf"] = _patch(data, embd[4], "<I", 4)  # Q4_2, removed from ggml
    cases["ggml-type-unknown.gguf"] = _patch(data, embd[4], "<I", 1000)
    cases["ggml-type-block-mismatch.gguf"] = _patch(data, embd[4], "<I", int(gguf.GGMLQuantizationType.Q4_K))
    cases["tensor-offset-past-end.gguf"] = _patch(data, last[5], "<Q", size * 4)
    cases["tensor-offset-huge.gguf"] = _patch(data, last[5], "<Q", 2**64 - 32)
    cases["tensor-offset-misaligned.gguf"] = _patch(
        data, second[5], "<Q", struct.unpack_from("<Q", data, second[5])[0] + 1
    )
    cases["tensor-overlap.gguf"] = _patch(data, second[5], "<Q", 0)
    cases["tensor-name-length-huge.gguf"] = _patch(data, embd[0], "<Q", 2**50)
    cases["empty.gguf"] = b""

    # semantic defects, written through gguf's writer so the structure stays intact
    vt = gguf.GGUFValueType
    tok = list(reader.fields["tokenizer.ggml.tokens"].contents())
    i01 = tok.index("<0x01>")
    for label, bad in (("short", "<0x1>"), ("nonhex", "<0xZZ>"), ("long", "<0x100>"), ("tiny", "<0")):
        bad_tokens = tok.copy()
        bad_tokens[i01] = bad
        cases[f"byte-token-{label}.gguf"] = _rewrite(
            tiny_gguf, out / f"byte-token-{label}.gguf", kv={"tokenizer.ggml.tokens": (bad_tokens, vt.ARRAY, vt.STRING)}
        )
    # llama.cpp looks byte tokens up as "<0x0A>" exactly: a lowercase spelling leaves "\n" without a token
    cases["byte-token-lowercase.gguf"] = _rewrite(
        tiny_gguf,
        out / "byte-token-lowercase.gguf",
        kv={"tokenizer.ggml.tokens": (["<0x0a>" if t == "<0x0A>" else t for t in tok], vt.ARRAY, vt.STRING)},
    )
    cases["arch-unsupported.gguf"] = _rewrite(tiny_gguf, out / "arch-unsupported.gguf", arch="definitely-not-an-arch")
    arch_key = fields["general.architecture"][1]
    cases["arch-missing.gguf"] = data[:arch_key] + b"general.architecturX" + data[arch_key + 20 :]
    cases["arch-not-string.gguf"] = _rewrite(
        tiny_gguf, out / "arch-not-string.gguf", kv={"general.architecture": (7, vt.UINT32)}
    )
    cases["alignment-not-pow2.gguf"] = _rewrite(
        tiny_gguf, out / "alignment-not-pow2.gguf", kv={"general.alignment": (48, vt.UINT32)}
    )
    cases["alignment-16.gguf"] = _rewrite(
        tiny_gguf, out / "alignment-16.gguf", kv={"general.alignment": (16, vt.UINT32)}
    )
    cases["alignment-wrong-type.gguf"] = _rewrite(
        tiny_gguf, out / "alignment-wrong-type.gguf", kv={"general.alignment": (32, vt.UINT64)}
    )
    cases["scores-short.gguf"] = _rewrite(
        tiny_gguf,
        out / "scores-short.gguf",
        kv={
            "tokenizer.ggml.scores": (
                list(reader.fields["tokenizer.ggml.scores"].contents())[:100],
                vt.ARRAY,
                vt.FLOAT32,
            )
        },
    )
    cases["tensor-name-too-long.gguf"] = _rewrite(
        tiny_gguf, out / "tensor-name-too-long.gguf", rename={"output_norm.weight": "x" * 64}
    )

    # control: the untouched file passes and llama.cpp loads it
    cases["valid.gguf"] = tiny_gguf

    paths = {}
    for label, content in cases.items():
        dst = out / label
        if isinstance(content, bytes):
            dst.write_bytes(content)
        elif content != dst:
            dst.write_bytes(content.read_bytes())
        paths[label] = dst
    return paths


# -- tests ---------------------------------------------------------------------------------


def test_corpus_every_malformed_file_is_invalid_model_error(corpus):
    results = _run_harness(list(corpus.values()))
    assert set(results) == set(corpus), "the harness skipped cases"
    assert results["valid.gguf"]["result"] == "loaded", results["valid.gguf"]
    wrong = {name: r for name, r in results.items() if name != "valid.gguf" and r["result"] != "invalid"}
    assert not wrong, f"cases that got past validation: {json.dumps(wrong, indent=1)}"
    for name, r in results.items():
        if name != "valid.gguf":
            assert "is " in r["message"] and str(corpus[name]) in r["message"], r


@pytest.mark.parametrize(
    "label, expected",
    [
        ("bad-magic.gguf", "not a GGUF file"),
        ("legacy-ggjt.gguf", "old GGJT format"),
        ("version-4.gguf", "unsupported GGUF version 4"),
        ("version-big-endian.gguf", "big-endian"),
        ("kv-count-absurd.gguf", "absurd key/value count"),
        ("tensor-count-absurd.gguf", "absurd tensor count 4611686018427387904"),
        ("string-length-huge.gguf", "claims a length of 9223372036854775808 bytes"),
        ("scores-uint8.gguf", "must hold float32 elements but holds uint8"),
        ("token-type-uint32.gguf", "must hold int32 elements but holds uint32"),
        ("array-nested.gguf", "nested arrays"),
        ("n-dims-5.gguf", "5 dimensions"),
        ("dims-overflow.gguf", "overflows int64"),
        ("ggml-type-unknown.gguf", "unknown ggml type 1000"),
        ("ggml-type-block-mismatch.gguf", "not a multiple of its block size 256"),
        ("tensor-offset-past-end.gguf", "the file ends at"),
        ("tensor-offset-misaligned.gguf", "not a multiple of the alignment 32"),
        ("tensor-overlap.gguf", "overlaps"),
        ("byte-token-short.gguf", "'<0x1>'"),
        ("byte-token-nonhex.gguf", "'<0xZZ>'"),
        ("byte-token-lowercase.gguf", "'<0x0a>', not <0xHH> with two uppercase hex digits"),
        ("alignment-16.gguf", "general.alignment is 16"),
        ("arch-unsupported.gguf", "'definitely-not-an-arch' is not supported"),
        ("alignment-not-pow2.gguf", "not a power of two"),
        ("scores-short.gguf", "100 entries for 554 tokens"),
        ("tensor-name-too-long.gguf", "at most 63"),
        ("truncated-20.gguf", "truncated"),
        ("empty.gguf", "empty"),
    ],
)
def test_messages_say_what_where_and_what_to_do(corpus, label, expected):
    with pytest.raises(InvalidModelError) as err:
        validate_model_path(corpus[label])
    msg = str(err.value)
    assert expected in msg
    assert err.value.path == str(corpus[label])
    if label not in ("arch-unsupported.gguf", "legacy-ggjt.gguf"):
        assert "trusted source" in msg or "Re-download" in msg


def test_truncation_reports_offset_and_sizes(corpus, tiny_gguf):
    size = tiny_gguf.stat().st_size
    with pytest.raises(InvalidModelError) as err:
        validate_gguf(corpus[f"truncated-{size - 1}.gguf"])
    msg = str(err.value)
    assert f"the file ends at {size - 1}" in msg and "byte offset" in msg and "truncated by 1 bytes" in msg


def test_valid_file_info(tiny_gguf):
    import gguf

    info = validate_gguf(tiny_gguf)
    reader = gguf.GGUFReader(tiny_gguf)
    assert info.version == 3 and info.architecture == "llama"
    assert info.file_size == tiny_gguf.stat().st_size
    assert info.n_tensors == len(reader.tensors) == 21
    assert info.n_kv == len([k for k in reader.fields if not k.startswith("GGUF.")])
    assert info.alignment == 32 and info.data_offset == reader.data_offset
    assert [t.name for t in info.tensors] == [t.name for t in reader.tensors]
    for ours, theirs in zip(info.tensors, reader.tensors, strict=True):
        assert ours.offset == theirs.data_offset and ours.nbytes == theirs.n_bytes
        assert ours.shape == tuple(int(d) for d in theirs.shape) and ours.ggml_type == theirs.tensor_type.name
    assert info.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert info.chat_template == str(reader.fields["tokenizer.chat_template"].contents())
    assert info.metadata["llama.block_count"] == 2 and info.name == "tiny-llama"
    tokens = info.array("tokenizer.ggml.tokens")
    assert tokens == tuple(reader.fields["tokenizer.ggml.tokens"].contents()) and len(tokens) == 554


def test_quantized_file_and_big_arrays_are_summarized(tiny_gguf_q8, tmp_path):
    from localllm.testing import Shape, write_llama_gguf

    info = validate_gguf(tiny_gguf_q8)
    assert {t.ggml_type for t in info.tensors} >= {"Q8_0", "F32"}
    big = write_llama_gguf(tmp_path / "big-vocab.gguf", Shape(n_vocab=3000))
    info = validate_gguf(big)
    summary = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(summary, GGUFArray) and summary.length == 3000 and summary.element_type == "string"
    assert info.array("tokenizer.ggml.tokens")[-1] == "[filler2999]"
    assert len(info.array("tokenizer.ggml.scores")) == 3000


def _evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this creates the marker file

    return pickle.dumps(Evil(), protocol=4)


def test_pickles_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    payload = _evil_pickle(marker)
    files = []
    for name in ("model.bin", "model.pt", "model.pth", "model.pkl", "model.ckpt", "renamed.gguf", "renamed.dat"):
        (tmp_path / name).write_bytes(payload)
        files.append(tmp_path / name)
    for name in ("torch-zip.pt", "torch-zip.gguf", "torch-zip.model"):
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("archive/data.pkl", payload)
            z.writestr("archive/data/0", b"\0" * 16)
        files.append(tmp_path / name)
    for path in files:
        with pytest.raises(InvalidModelError) as err:
            validate_model_path(path)
        msg = str(err.value)
        assert "run arbitrary code" in msg and "GGUF" in msg, msg
    with pytest.raises(InvalidModelError):
        refuse_pickle(tmp_path / "never-created.pt")  # refused by name alone
    results = _run_harness(files)
    assert all(r["result"] == "invalid" for r in results.values()), results
    assert not marker.exists()


def test_dispatcher(tmp_path, tiny_gguf):
    assert validate_model_path(tiny_gguf).architecture == "llama"
    renamed = tmp_path / "model.weights"
    renamed.write_bytes(tiny_gguf.read_bytes())
    assert validate_model_path(renamed).n_tensors == 21  # GGUF content, other name
    with pytest.raises(InvalidModelError, match="no such file"):
        validate_model_path(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidModelError, match="unknown model format"):
        validate_model_path(tmp_path / "notes.txt")
    (tmp_path / "w.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      ")
    with pytest.raises(InvalidModelError, match="safetensors"):
        validate_model_path(tmp_path / "w.safetensors")
    empty = tmp_path / "folder"
    empty.mkdir()
    with pytest.raises(InvalidModelError, match="without an ONNX model"):
        validate_model_path(empty)
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "model.onnx").write_bytes(b"")
    (onnx / "tokenizer.json").write_text("{}")
    (onnx / "config.json").write_text("{}")
    with pytest.raises(InvalidModelError, match="empty ONNX graph|not a readable ONNX model"):
        validate_model_path(onnx)  # the full checks live in tests/test_onnx.py


def test_static_architectures_are_in_the_installed_llama_cpp():
    lib = _libllama_path()
    assert lib is not None, "libllama not found next to the llama_cpp package"
    data = lib.read_bytes()
    # string literals may be tail-merged by the linker ("qwen2" inside "rwkv6qwen2"), so match name + NUL
    missing = sorted(a for a in SUPPORTED_ARCHITECTURES if a.encode() + b"\0" not in data)
    assert not missing
    assert is_supported_architecture("llama") and not is_supported_architecture("definitely-not-an-arch")


def test_import_is_light():
    code = (
        "import sys, localllm.validate, localllm.store, localllm.commands.pull; "
        "heavy = {'llama_cpp', 'numpy', 'huggingface_hub', 'gguf'} & set(sys.modules); "
        "assert not heavy, heavy; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_ggml_type_table_matches_gguf():
    import gguf

    from localllm.validate import GGML_TYPES

    theirs = {int(t): (t.name, blk, nbytes) for t, (blk, nbytes) in gguf.GGML_QUANT_SIZES.items()}
    assert dict(GGML_TYPES) == theirs


def test_validation_imports_neither_gguf_nor_numpy(tiny_gguf_q8):
    code = (
        "import sys; from localllm.validate import validate_gguf; "
        f"info = validate_gguf({str(tiny_gguf_q8)!r}); assert info.n_tensors == 21; "
        "heavy = {'numpy', 'gguf', 'yaml', 'zipfile'} & set(sys.modules); assert not heavy, heavy; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.fixture(scope="module")
def big_vocab_gguf(tmp_path_factory) -> Path:
    """A vocabulary past SMALL_ARRAY, so tokens are walked and summarized rather than kept."""
    from localllm.testing import Shape, write_llama_gguf

    return write_llama_gguf(tmp_path_factory.mktemp("bigvocab") / "big-vocab.gguf", Shape(n_vocab=3000))


def test_big_vocabulary_defects_are_invalid(big_vocab_gguf, tmp_path):
    import gguf

    vt = gguf.GGUFValueType
    data = big_vocab_gguf.read_bytes()
    fields, _, reader = _layout(big_vocab_gguf)
    tok = fields["tokenizer.ggml.tokens"]  # key len, key, type, elem type, count, then (len, bytes) per token
    length_at = {k: tok[5 + 2 * k] for k in (0, 1500, 2999)}
    cases: dict[str, tuple[bytes | Path, str]] = {
        "late-token-huge.gguf": (
            _patch(data, length_at[1500], "<Q", 2**31 + 7),
            "token 1500 claims a length of 2147483655 bytes",
        ),
        "late-token-over-limit.gguf": (_patch(data, length_at[1500], "<Q", 65_537), "token 1500 claims a length"),
        # the walk goes on past the vocabulary into the next keys, which no longer parse
        "last-token-overlong.gguf": (_patch(data, length_at[2999], "<Q", 60_000), "is not a valid GGUF file"),
        "first-token-overlong.gguf": (_patch(data, length_at[0], "<Q", 65_536), "is not a valid GGUF file"),
    }
    for cut in (length_at[1500] + 3, length_at[2999] + 9, tok[-1] + 2):
        cases[f"truncated-in-tokens-{cut}.gguf"] = (data[:cut], "truncated")
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    late = types.copy()
    late[2999] = 6  # LLAMA_TOKEN_TYPE_BYTE on "[filler2999]"
    cases["late-byte-token.gguf"] = (
        _rewrite(big_vocab_gguf, tmp_path / "late.gguf", kv={"tokenizer.ggml.token_type": (late, vt.ARRAY, vt.INT32)}),
        "token 2999 is marked as a byte token but its text is '[filler2999]'",
    )
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    tokens[tokens.index("<0xFF>")] = "<0xFG>"
    cases["byte-token-nonhex.gguf"] = (
        _rewrite(big_vocab_gguf, tmp_path / "nonhex.gguf", kv={"tokenizer.ggml.tokens": (tokens, vt.ARRAY, vt.STRING)}),
        "'<0xFG>'",
    )
    paths = {}
    for label, (content, _) in cases.items():
        paths[label] = tmp_path / label
        paths[label].write_bytes(content if isinstance(content, bytes) else content.read_bytes())
    results = _run_harness([*paths.values(), big_vocab_gguf])
    assert results["big-vocab.gguf"]["result"] == "loaded", results["big-vocab.gguf"]
    for label, (_, expected) in cases.items():
        r = results[label]
        assert r["result"] == "invalid" and expected in r["message"], (label, r)
