"""The GGUF check in front of llama.cpp (csrc/gguf_check.cpp): each kind of damage raises
ModelLoadError naming the field and its byte offset, in the same process, which then goes on working.
Several cases are ones the fuzz test found aborting llama.cpp before the check handled them."""
from __future__ import annotations

import re
import struct

import pytest

import lmfast as lms
from lmfast import _core

from .conftest import GREEDY
from .gguf_mutate import (ARR, BOOL, F32, F64, I8, I16, I32, I64, STR, U8, U16, U32, U64, GgufFile, Kv, Tensor, _str,
                          make_kv, seed_bytes)


@pytest.fixture(scope="module")
def seed():
    return GgufFile.parse(seed_bytes("spm"))


def _with_kv(g: GgufFile, key: str, vtype: int, value) -> bytes:
    return g.serialize([make_kv(key, vtype, value) if kv.key == key else kv for kv in g.kvs])


def _field_offset(g: GgufFile, kind: str, n: int = 0) -> int:
    return [off for off, _, k in g.fields if k == kind][n]


def _patch(raw: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _cases(g: GgufFile):
    raw = g.raw
    tokens = next(kv for kv in g.kvs if kv.key == "tokenizer.ggml.tokens").value[1]
    first_tensor = g.tensors[0]
    yield "version", _patch(raw, 4, "<I", 7), r"version 7 at offset 4"
    yield "tensor count", _patch(raw, 8, "<Q", 2**40), r"tensor count .*at byte offset 8"
    yield "kv count", _patch(raw, 16, "<Q", 2**62), r"metadata count .*at byte offset 16"
    yield "key length", _patch(raw, 24, "<Q", 2**63), r"metadata key #0 has length \d+.*at byte offset 24"
    yield "value type", _patch(raw, _field_offset(g, "type"), "<I", 13), r"invalid value type 13"
    yield "string length", _patch(raw, _field_offset(g, "strlen", 1), "<Q", 2**50), r"needs \d+ bytes|has length \d+, over the limit"
    yield "array count", _patch(raw, _field_offset(g, "count", 2), "<Q", 2**29), r"(strings|elements), more than"
    nested = Kv("general.tags", ARR, None, _str("general.tags") + struct.pack("<IIQ", ARR, ARR, 0))
    yield "nested array", g.serialize(g.kvs + [nested]), r"array of arrays"
    yield "duplicate key", g.serialize(g.kvs + [g.kvs[0]]), r"duplicate metadata key 'general.architecture'"
    yield "alignment type", g.serialize(g.kvs + [make_kv("general.alignment", U64, 32)]), r"alignment must be a uint32"
    yield "alignment value", g.serialize(g.kvs + [make_kv("general.alignment", U32, 48)]), r"not a power of two"
    yield "alignment too small", g.serialize(g.kvs + [make_kv("general.alignment", U32, 8)]), r"below 32"
    yield "n_dims", _patch(raw, _field_offset(g, "ndims"), "<I", 5), r"has 5 dimensions"
    yield "zero dim", _patch(raw, _field_offset(g, "dim"), "<q", 0), r"dimension 0 is 0"
    yield "element overflow", _patch(_patch(raw, _field_offset(g, "dim"), "<q", 2**62),
                                     _field_offset(g, "dim", 1), "<q", 2**62), r"more elements than fit|more than the whole file"
    yield "ggml type", _patch(raw, _field_offset(g, "ggml_type"), "<I", 31), r"invalid or unsupported ggml type 31"
    yield "intermediate type", _patch(raw, _field_offset(g, "ggml_type", len(g.tensors) - 1), "<I", 9), r"type q8_1, which is not a weight type"
    yield "block size", _patch(raw, _field_offset(g, "dim"), "<q", first_tensor.dims[0] + 1), r"not a multiple of the block size"
    yield "unaligned offset", _patch(raw, _field_offset(g, "offset", 1), "<Q", g.tensors[1].offset + 4), r"not a multiple of the alignment"
    yield "offset past end", _patch(raw, _field_offset(g, "offset", 2), "<Q", 2**40), r"runs past the end of the file"
    yield "overlapping tensors", _patch(raw, _field_offset(g, "offset", 2), "<Q", 0), r"overlaps or leaves a gap"
    t2 = [Tensor(t.name, t.dims, t.ggml_type, t.offset) for t in g.tensors]
    t2[1].name = t2[0].name
    yield "duplicate tensor", g.serialize(tensors=t2), r"duplicate tensor name 'token_embd.weight'"
    t3 = [Tensor(t.name, t.dims, t.ggml_type, t.offset) for t in g.tensors]
    t3[0].name = "x" * 64
    yield "tensor name length", g.serialize(tensors=t3), r"tensor #0 name has length 64"
    yield "truncated data", raw[: len(raw) - 100], r"runs past the end of the file"
    # Found by the fuzz test: these aborted the process inside llama.cpp.
    dup = list(tokens)
    dup[200] = dup[201]
    yield "duplicate token", _with_kv(g, "tokenizer.ggml.tokens", ARR, (STR, dup)), r"duplicate token at index 201"
    nul = list(tokens)
    nul[210] = tokens[211] + "\0x"  # equal to token 211 up to the NUL byte, where llama.cpp stops reading
    yield "duplicate token after NUL", _with_kv(g, "tokenizer.ggml.tokens", ARR, (STR, nul)), r"duplicate token at index 211"
    yield "block_count 0", _with_kv(g, "llama.block_count", U32, 0), r"'llama.block_count' is 0"
    yield "block_count huge", _with_kv(g, "llama.block_count", U32, 100000), r"'llama.block_count' is 100000"
    # 2^31 + 2 KV heads wrap the K/V widths around to the tensors' shapes; the load passed and a
    # reshape aborted at the first context (found by the fuzz test).
    yield ("head_count_kv wraps", _with_kv(g, "llama.attention.head_count_kv", U32, 2**31 + 2),
           r"head_count_kv 2147483650 is outside 0..head_count")
    yield "negative eps", _with_kv(g, "llama.attention.layer_norm_rms_epsilon", F32, -1.0), r"layer_norm_rms_epsilon' is -1"
    yield "nan eps", _with_kv(g, "llama.attention.layer_norm_rms_epsilon", F32, float("nan")), r"layer_norm_rms_epsilon' is -?nan"
    # A BPE vocabulary declared as SPM: llama.cpp's tokenizer throws std::out_of_range from inside.
    bpe = GgufFile.parse(seed_bytes("bpe"))
    yield ("bpe tokens as spm", bpe.serialize([make_kv(kv.key, STR, "llama") if kv.key == "tokenizer.ggml.model"
                                               else kv for kv in bpe.kvs]), r"vocabulary is unusable")
    yield ("bpe tokens as rwkv", bpe.serialize([make_kv(kv.key, STR, "rwkv") if kv.key == "tokenizer.ggml.model"
                                                else kv for kv in bpe.kvs]), r"vocabulary is unusable")
    # No tokenizer at all (the vocabulary size then comes from llama.vocab_size): llama.cpp
    # loads the model, then aborts at the first tokenization.
    n_vocab = len(next(kv for kv in bpe.kvs if kv.key == "tokenizer.ggml.tokens").value[1])
    for name in ("none", "no_vocab"):
        kvs = [make_kv(kv.key, STR, name) if kv.key == "tokenizer.ggml.model" else kv for kv in bpe.kvs]
        yield (f"tokenizer {name}", bpe.serialize(kvs + [make_kv("llama.vocab_size", U32, n_vocab)]),
               r"the model has no tokenizer")


def test_every_kind_of_damage_is_a_clear_error(seed, tmp_path, client):
    cases = list(_cases(seed))
    problems = []
    for name, data, pattern in cases:
        path = tmp_path / "bad.gguf"
        path.write_bytes(data)
        try:
            client.llm.load_new_instance(str(path), "bad").unload()
            problems.append((name, "loaded"))
            continue
        except lms.ModelLoadError as e:
            msg = str(e)
        if not re.search(pattern, msg):
            problems.append((name, msg))
        elif str(path) not in msg:
            problems.append((name, "no path: " + msg))
        elif "llama.cpp" not in msg and "vocabulary" not in msg and "version" not in msg and "at byte offset" not in msg:
            problems.append((name, "no offset: " + msg))
    assert not problems, problems
    assert "bad" not in [m.identifier for m in client.llm.list_loaded()]
    assert len(cases) >= 25


def test_validate_gguf_on_real_files(seed, smollm2_path, tmp_path):
    info = _core.validate_gguf(str(smollm2_path))
    assert info["version"] == 3 and info["n_tensors"] > 200 and info["n_kv"] > 20
    assert info["data_offset"] % info["alignment"] == 0
    assert info["data_offset"] + info["data_size"] <= smollm2_path.stat().st_size
    p = tmp_path / "seed.gguf"
    p.write_bytes(seed.raw)
    s = _core.validate_gguf(str(p))
    assert s["n_tensors"] == len(seed.tensors) and s["n_kv"] == len(seed.kvs)


def test_read_metadata_matches_an_independent_parser(seed, tmp_path):
    """lmfast.models.gguf.read_metadata (the native checker's reader) against the fuzz test's own
    Python parser, on a seed carrying one value of every GGUF type, extremes included."""
    from lmfast.models.gguf import GgufArray, read_metadata

    extra = [make_kv("t.u8", U8, 255), make_kv("t.i8", I8, -128), make_kv("t.u16", U16, 65535),
             make_kv("t.i16", I16, -32768), make_kv("t.u32", U32, 2**32 - 1), make_kv("t.i32", I32, -2**31),
             make_kv("t.u64", U64, 2**64 - 1), make_kv("t.i64", I64, -2**63), make_kv("t.f32", F32, 0.1),
             make_kv("t.f64", F64, -1e300), make_kv("t.bool", BOOL, True), make_kv("t.str", STR, "héllo"),
             make_kv("t.strs", ARR, (STR, ["a", "bc", ""])), make_kv("t.empty", ARR, (I32, []))]
    p = tmp_path / "typed.gguf"
    p.write_bytes(seed.serialize(seed.kvs + extra))
    expected = GgufFile.parse(p.read_bytes())
    meta = read_metadata(p)
    assert list(meta) == [kv.key for kv in expected.kvs]
    for kv in expected.kvs:
        got = meta[kv.key]
        if kv.vtype == ARR:
            assert got == GgufArray(("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
                                     "string")[kv.value[0]], len(kv.value[1])), kv.key
        else:
            assert got == kv.value and type(got) is type(kv.value), (kv.key, got, kv.value)
    assert meta["t.f32"] == struct.unpack("<f", struct.pack("<f", 0.1))[0]


def test_read_metadata_raises_for_a_bad_file(seed, tmp_path):
    from lmfast.models.gguf import read_metadata

    p = tmp_path / "bad.gguf"
    p.write_bytes(_patch(seed.raw, _field_offset(seed, "count", 2), "<Q", 2**29))
    with pytest.raises(lms.ModelLoadError, match=r"more than .*\(at byte offset \d+\)"):
        read_metadata(p)
    with pytest.raises(lms.ModelLoadError, match="not found"):
        read_metadata(tmp_path / "missing.gguf")


def test_process_still_works_after_all_of_that(llm):
    assert "paris" in llm.respond("What is the capital of France?", config={**GREEDY, "maxTokens": 16}).content.lower()
