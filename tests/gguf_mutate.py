"""GGUF seeds and mutations for the fuzz test (tests/test_fuzz_gguf.py).

* ``write_seed(path, kind)`` writes a small valid llama-architecture model (a few hundred KB, loads in
  milliseconds) with an SPM ("llama") or a byte-level BPE ("gpt2") vocabulary and a chat template.
* ``GgufFile.parse(data)`` splits a GGUF file into its parts, keeping each part's raw bytes, and records
  the offset of every length, count, type, shape and offset field, so that mutations can aim at them.
* ``mutate(gguf, rng)`` returns the bytes of one mutated file and a short description of the mutation.

Standard library only (numpy/gguf are not needed to make the seeds).
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
           U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0 = 0, 1, 2, 8
_TYPE_SIZE = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q4_0: (32, 18), GGML_Q8_0: (32, 34), 30: (1, 2)}


def _str(s: str | bytes) -> bytes:
    b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype: int, value) -> bytes:
    if vtype == STR:
        return _str(value)
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(encode_value(etype, v) for v in items)
    return struct.pack(_SCALAR[vtype], value)


def encode_kv(key: str, vtype: int, value) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + encode_value(vtype, value)


@dataclass
class Tensor:
    name: str
    dims: list[int]
    ggml_type: int
    offset: int = 0

    def nbytes(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        blk, size = _TYPE_SIZE[self.ggml_type]
        return n // blk * size

    def encode(self) -> bytes:
        return (_str(self.name) + struct.pack("<I", len(self.dims)) + b"".join(struct.pack("<q", d) for d in self.dims)
                + struct.pack("<IQ", self.ggml_type, self.offset))


# -- seeds --------------------------------------------------------------------------------------

_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _gpt2_byte_chars() -> list[str]:
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def seed_bytes(kind: str = "spm", n_embd: int = 64, n_ff: int = 128, n_layer: int = 1, seed: int = 0,
               n_expert: int = 0, n_expert_used: int = 0) -> bytes:
    """A valid, tiny llama model. kind: 'spm' (tokenizer.ggml.model 'llama') or 'bpe' ('gpt2').
    With ``n_expert``, a mixture of experts (as Mixtral is laid out) using ``n_expert_used`` per token."""
    rng = random.Random(seed)
    if kind == "spm":
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
                 ["▁", "▁the", "▁a", "▁hello", "e", "t", "he", "▁he"]
        types = [2, 3, 3] + [6] * 256 + [1] * 8
        scores = [0.0] * 259 + [-float(i) for i in range(8)]
        kvs = [("tokenizer.ggml.model", STR, "llama"),
               ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
               ("tokenizer.ggml.scores", ARR, (F32, scores)),
               ("tokenizer.ggml.token_type", ARR, (I32, types)),
               ("tokenizer.ggml.bos_token_id", U32, 1),
               ("tokenizer.ggml.eos_token_id", U32, 2),
               ("tokenizer.ggml.unknown_token_id", U32, 0)]
    else:
        chars = _gpt2_byte_chars()
        merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
        tokens = chars + ["Ġt", "he", "Ġthe", "in", "Ġa", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        types = [1] * (len(tokens) - 3) + [3, 3, 3]
        kvs = [("tokenizer.ggml.model", STR, "gpt2"),
               ("tokenizer.ggml.pre", STR, "smollm"),
               ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
               ("tokenizer.ggml.token_type", ARR, (I32, types)),
               ("tokenizer.ggml.merges", ARR, (STR, merges)),
               ("tokenizer.ggml.bos_token_id", U32, len(tokens) - 3),
               ("tokenizer.ggml.eos_token_id", U32, len(tokens) - 1),
               ("tokenizer.ggml.add_bos_token", BOOL, False)]
    n_vocab = len(tokens)
    n_head, n_head_kv = 4, 2
    kvs = [("general.architecture", STR, "llama"),
           ("general.name", STR, f"fuzz-seed-{kind}"),
           ("llama.context_length", U32, 256),
           ("llama.embedding_length", U32, n_embd),
           ("llama.block_count", U32, n_layer),
           ("llama.feed_forward_length", U32, n_ff),
           ("llama.rope.dimension_count", U32, n_embd // n_head),
           ("llama.attention.head_count", U32, n_head),
           ("llama.attention.head_count_kv", U32, n_head_kv),
           ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
           ("llama.rope.freq_base", F32, 10000.0),
           ("general.file_type", U32, 0)] + kvs + [("tokenizer.chat_template", STR, _TEMPLATE)]
    if n_expert:
        kvs += [("llama.expert_count", U32, n_expert), ("llama.expert_used_count", U32, n_expert_used)]
    kv_dim = n_embd // n_head * n_head_kv
    tensors = [Tensor("token_embd.weight", [n_embd, n_vocab], GGML_Q8_0),
               Tensor("output_norm.weight", [n_embd], GGML_F32),
               Tensor("output.weight", [n_embd, n_vocab], GGML_Q8_0)]
    for i in range(n_layer):
        tensors += [Tensor(f"blk.{i}.attn_norm.weight", [n_embd], GGML_F32),
                    Tensor(f"blk.{i}.attn_q.weight", [n_embd, n_embd], GGML_F16),
                    Tensor(f"blk.{i}.attn_k.weight", [n_embd, kv_dim], GGML_F16),
                    Tensor(f"blk.{i}.attn_v.weight", [n_embd, kv_dim], GGML_F16),
                    Tensor(f"blk.{i}.attn_output.weight", [n_embd, n_embd], GGML_F16),
                    Tensor(f"blk.{i}.ffn_norm.weight", [n_embd], GGML_F32)]
        if n_expert:
            tensors += [Tensor(f"blk.{i}.ffn_gate_inp.weight", [n_embd, n_expert], GGML_F16),
                        Tensor(f"blk.{i}.ffn_gate_exps.weight", [n_embd, n_ff, n_expert], GGML_F16),
                        Tensor(f"blk.{i}.ffn_up_exps.weight", [n_embd, n_ff, n_expert], GGML_F16),
                        Tensor(f"blk.{i}.ffn_down_exps.weight", [n_ff, n_embd, n_expert], GGML_F16)]
        else:
            tensors += [Tensor(f"blk.{i}.ffn_gate.weight", [n_embd, n_ff], GGML_F16),
                        Tensor(f"blk.{i}.ffn_up.weight", [n_embd, n_ff], GGML_F16),
                        Tensor(f"blk.{i}.ffn_down.weight", [n_ff, n_embd], GGML_F16)]
    data = bytearray()
    for t in tensors:
        t.offset = len(data)
        n = t.nbytes()
        if t.ggml_type == GGML_F32:
            data += struct.pack(f"<{n // 4}f", *([1.0] * (n // 4)))
        elif t.ggml_type == GGML_F16:
            data += struct.pack(f"<{n // 2}e", *(rng.gauss(0, 0.05) for _ in range(n // 2)))
        else:  # Q8_0: per block an f16 scale and 32 int8
            for _ in range(n // 34):
                data += struct.pack("<e", 0.01) + bytes(rng.randrange(256) for _ in range(32))
        data += b"\0" * (-len(data) % 32)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    header += b"".join(encode_kv(*kv) for kv in kvs) + b"".join(t.encode() for t in tensors)
    header += b"\0" * (-len(header) % 32)
    return bytes(header + data)


# -- parsing ------------------------------------------------------------------------------------

@dataclass
class Kv:
    key: str
    vtype: int
    value: object  # scalars, str, or (etype, list) for arrays
    raw: bytes


@dataclass
class GgufFile:
    version: int
    kvs: list[Kv]
    tensors: list[Tensor]
    data: bytes  # the data section (from the aligned data offset)
    alignment: int = 32
    raw: bytes = b""
    # (offset, size, kind) of fields in `raw`, for aimed byte-level mutations
    fields: list[tuple[int, int, str]] = field(default_factory=list)
    header_end: int = 0

    @classmethod
    def parse(cls, raw: bytes) -> "GgufFile":
        pos = 0
        fields: list[tuple[int, int, str]] = []

        def take(fmt: str, kind: str | None = None):
            nonlocal pos
            size = struct.calcsize(fmt)
            if kind:
                fields.append((pos, size, kind))
            (v,) = struct.unpack_from(fmt, raw, pos)
            pos += size
            return v

        def string(kind: str) -> str:
            nonlocal pos
            n = take("<Q", kind)
            s = raw[pos:pos + n].decode("utf-8", "surrogateescape")
            pos += n
            return s

        def value(vtype: int, top: bool):
            if vtype == STR:
                return string("strlen")
            if vtype == ARR:
                etype = take("<I", "type")
                n = take("<Q", "count")
                return (etype, [value(etype, False) for _ in range(n)])
            return take(_SCALAR[vtype], "scalar" if top else None)

        assert raw[:4] == b"GGUF"
        pos = 4
        version = take("<I", "version")
        n_tensors = take("<Q", "count")
        n_kv = take("<Q", "count")
        kvs = []
        alignment = 32
        for _ in range(n_kv):
            start = pos
            key = string("strlen")
            vtype = take("<I", "type")
            v = value(vtype, True)
            kvs.append(Kv(key, vtype, v, raw[start:pos]))
            if key == "general.alignment":
                alignment = v
        tensors = []
        for _ in range(n_tensors):
            name = string("strlen")
            nd = take("<I", "ndims")
            dims = [take("<q", "dim") for _ in range(nd)]
            tt = take("<I", "ggml_type")
            off = take("<Q", "offset")
            tensors.append(Tensor(name, dims, tt, off))
        header_end = pos
        data_start = pos + (-pos % alignment)
        return cls(version, kvs, tensors, raw[data_start:], alignment, raw, fields, header_end)

    def serialize(self, kvs: list[Kv] | None = None, tensors: list[Tensor] | None = None,
                  relayout: bool = False) -> bytes:
        kvs = self.kvs if kvs is None else kvs
        tensors = self.tensors if tensors is None else tensors
        data = self.data
        if relayout:  # new offsets and a data section to match (a tensor's old bytes where its size is unchanged)
            old = {t.name: t for t in self.tensors}
            out = bytearray()
            for t in tensors:
                n = t.nbytes() if t.ggml_type in _TYPE_SIZE else 0
                o = old.get(t.name)
                t.offset = len(out)
                if o is not None and o.ggml_type in _TYPE_SIZE and o.nbytes() == n:
                    out += self.data[o.offset:o.offset + n]
                else:
                    out += bytes(n)
                out += b"\0" * (-len(out) % self.alignment)
            data = bytes(out)
        header = b"GGUF" + struct.pack("<IQQ", self.version, len(tensors), len(kvs))
        header += b"".join(kv.raw for kv in kvs) + b"".join(t.encode() for t in tensors)
        header += b"\0" * (-len(header) % self.alignment)
        return header + data


def make_kv(key: str, vtype: int, value) -> Kv:
    return Kv(key, vtype, value, encode_kv(key, vtype, value))


def with_chat_template(source: Path, template: str, dest: Path) -> Path:
    """Writes ``dest``: the GGUF file ``source`` with ``template`` as its chat template."""
    g = GgufFile.parse(source.read_bytes())
    kvs = [make_kv(kv.key, STR, template) if kv.key == "tokenizer.chat_template" else kv for kv in g.kvs]
    dest.write_bytes(g.serialize(kvs))
    return dest


# -- mutations ----------------------------------------------------------------------------------

_INTERESTING_U64 = [0, 1, 2, 7, 31, 32, 33, 255, 256, 4096, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1,
                    2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
_INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 9, 12, 13, 14, 31, 42, 43, 44, 100, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
_INTERESTING_I64 = [0, -1, 1, 2, 3, 31, 32, 33, 64, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -2**63]
_TOKENIZER_MODELS = ["llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "ugm", "none", "no_vocab", "", "x" * 300]


def _interesting_scalar(vtype: int, rng: random.Random):
    if vtype in (F32, F64):
        return rng.choice([0.0, -0.0, -1.0, 1e-30, 1e30, float("inf"), float("-inf"), float("nan"), 3.5, 1e9])
    if vtype == BOOL:
        return rng.random() < 0.5
    lo, hi = {U8: (0, 255), I8: (-128, 127), U16: (0, 65535), I16: (-32768, 32767), U32: (0, 2**32 - 1),
              I32: (-2**31, 2**31 - 1), U64: (0, 2**64 - 1), I64: (-2**63, 2**63 - 1)}[vtype]
    cands = [0, 1, 2, 3, 4, 7, 8, 16, 31, 64, 255, 1000, 65536, 2**31 - 1, -1, -2, lo, hi, hi // 2]
    return min(hi, max(lo, rng.choice(cands)))


def _mutate_kv_value(kv: Kv, g: GgufFile, rng: random.Random) -> Kv:
    """A new value of the same key: hparams, tokenizer arrays, strings, or a different type."""
    if rng.random() < 0.15:  # a different value type for the same key
        vtype = rng.choice([U8, I32, U32, F32, STR, BOOL, U64])
        value = "x" if vtype == STR else _interesting_scalar(vtype, rng)
        if rng.random() < 0.3:
            vtype, value = ARR, (rng.choice([U8, I32, F32, STR]), [])
        return make_kv(kv.key, vtype, value)
    if kv.vtype == STR:
        if kv.key == "tokenizer.ggml.model":
            return make_kv(kv.key, STR, rng.choice(_TOKENIZER_MODELS))
        s = kv.value
        choice = rng.randrange(4)
        if choice == 0:
            s = ""
        elif choice == 1 and s:
            i = rng.randrange(len(s))
            s = s[:i] + rng.choice(["{%", "{{", "}}", "%}", "\x00", "\xff", "{% for", "{{ x.y.z }}", "€"]) + s[i:]
        elif choice == 2:
            s = s[: rng.randrange(len(s) + 1)]
        else:
            s = s * rng.choice([2, 50])
        return make_kv(kv.key, STR, s)
    if kv.vtype == ARR:
        etype, items = kv.value
        items = list(items)
        choice = rng.randrange(7)
        if choice == 0 and items:  # shorter
            items = items[: rng.randrange(len(items))]
        elif choice == 1 and items:  # a duplicate element (duplicate tokens, merges)
            i, j = rng.randrange(len(items)), rng.randrange(len(items))
            items[i] = items[j]
        elif choice == 2 and items:  # an element replaced with an interesting value
            i = rng.randrange(len(items))
            items[i] = (rng.choice(["", " ", "a b c", "\u0120", "<0x0A>", "\ud800x".encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape"), "x" * 1000])
                        if etype == STR else _interesting_scalar(etype, rng))
        elif choice == 3:  # longer
            items = items + items[: rng.randrange(1, 20)] if items else [""]
        elif choice == 4:  # another element type
            etype = rng.choice([U8, I8, I32, U32, F32, STR, I64, BOOL])
            items = [("t" if etype == STR else _interesting_scalar(etype, rng)) for _ in items]
        elif choice == 5:
            items = []
        else:  # shuffled
            rng.shuffle(items)
        return make_kv(kv.key, ARR, (etype, items))
    return make_kv(kv.key, kv.vtype, _interesting_scalar(kv.vtype, rng))


def _structural(g: GgufFile, rng: random.Random) -> tuple[bytes, str]:
    """Re-serialized files: changed values, removed/duplicated keys and tensors, changed shapes and types."""
    kvs, tensors = list(g.kvs), [Tensor(t.name, list(t.dims), t.ggml_type, t.offset) for t in g.tensors]
    op = rng.randrange(10)
    if op <= 3:
        # tokenizer and hparam keys are the interesting ones
        pool = [i for i, kv in enumerate(kvs) if kv.key.startswith(("tokenizer.", "llama."))] or list(range(len(kvs)))
        i = rng.choice(pool)
        kvs[i] = _mutate_kv_value(kvs[i], g, rng)
        desc = f"kv value {kvs[i].key}"
    elif op == 4:
        i = rng.randrange(len(kvs))
        desc = f"removed kv {kvs[i].key}"
        del kvs[i]
    elif op == 5:
        i = rng.randrange(len(kvs))
        kvs.append(kvs[i])
        desc = f"duplicate kv {kvs[i].key}"
    elif op == 6:
        key = rng.choice(["general.alignment", "llama.expert_count", "llama.attention.key_length",
                          "llama.rope.scaling.type", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_eos_token",
                          "llama.vocab_size", "tokenizer.ggml.precompiled_charsmap", "llama.attention.sliding_window"])
        vtype = rng.choice([U32, I32, STR, U8, BOOL, F32])
        value = "linear" if vtype == STR else _interesting_scalar(vtype, rng)
        kvs.append(make_kv(key, vtype, value))
        desc = f"added kv {key}"
    elif op == 7 and tensors:
        t = rng.choice(tensors)
        k = rng.randrange(3)
        if k == 0:
            t.dims = [d for d in t.dims] + [rng.choice([1, 2])]
        elif k == 1:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([1, 2, 32, 64, 96, 128])
        else:
            t.dims = list(reversed(t.dims))
        desc = f"shape of {t.name} -> {t.dims}"
    elif op == 8 and tensors:
        t = rng.choice(tensors)
        t.ggml_type = rng.choice([GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0, 30, 4, 31, 43, 99])
        desc = f"type of {t.name} -> {t.ggml_type}"
    else:
        i = rng.randrange(len(tensors))
        desc = f"removed tensor {tensors[i].name}"
        del tensors[i]
    return g.serialize(kvs, tensors, relayout=op >= 7), desc


def _pack_field(size: int, value: int) -> bytes:
    return (value % (1 << (8 * size))).to_bytes(size, "little")


def mutate(g: GgufFile, rng: random.Random, header_only: bool = False) -> tuple[bytes, str]:
    """One mutated file and a description. header_only keeps byte-level changes out of the tensor data."""
    raw = g.raw
    op = rng.random()
    if op < 0.10:  # truncation, mostly inside the header
        cut = rng.randrange(g.header_end + 64) if rng.random() < 0.8 else rng.randrange(len(raw))
        return raw[:cut], f"truncate at {cut}"
    if op < 0.45:  # an aimed field: counts, lengths, types, dims, offsets
        off, size, kind = rng.choice(g.fields)
        if kind in ("count", "strlen", "offset"):
            v = rng.choice(_INTERESTING_U64 + [int.from_bytes(raw[off:off + size], "little") + rng.choice([-1, 1, 8, 32])])
        elif kind in ("type", "ggml_type", "ndims", "version"):
            v = rng.choice(_INTERESTING_U32)
        elif kind == "dim":
            v = rng.choice(_INTERESTING_I64)
        else:  # scalar metadata values
            v = rng.choice(_INTERESTING_U64 + _INTERESTING_I64)
        out = bytearray(raw)
        out[off:off + size] = _pack_field(size, v)
        return bytes(out), f"{kind} field at {off} = {v}"
    if op < 0.65:  # random bit flips / byte overwrites
        out = bytearray(raw)
        end = g.header_end if header_only or rng.random() < 0.85 else len(raw)
        n = rng.choice([1, 1, 2, 4, 16])
        for _ in range(n):
            i = rng.randrange(end)
            if rng.random() < 0.6:
                out[i] ^= 1 << rng.randrange(8)
            else:
                out[i] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        return bytes(out), f"{n} byte flips"
    if op < 0.70:  # a chunk of the header repeated or removed
        a = rng.randrange(g.header_end)
        b = min(g.header_end, a + rng.randrange(1, 64))
        if rng.random() < 0.5:
            return raw[:a] + raw[b:], f"removed bytes {a}:{b}"
        return raw[:b] + raw[a:b] + raw[b:], f"repeated bytes {a}:{b}"
    return _structural(g, rng)
