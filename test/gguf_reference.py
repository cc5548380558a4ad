#!/usr/bin/env python3
"""gguf_reference.py: GGUF test files written by the `gguf` package (requirements.txt pins it)
and what that package reads from them, for test/test_gguf_python.sh.

    python gguf_reference.py good DIR    writes DIR/*.gguf and DIR/*.want: for each file, what
                                         gguf's GGUFReader reads and gguf.quants dequantizes,
                                         in the form `test_gguf --dump` prints
    python gguf_reference.py bad DIR     writes DIR/NAME.gguf broken files and DIR/bad.tsv:
                                         NAME <tab> the text the refusal must contain
    python gguf_reference.py models DIR  tiny random llama models as llama.cpp lays them out
                                         (DIR/model_ok.gguf, tied; DIR/model_untied.gguf) and
                                         broken ones, DIR/models.tsv as for bad

Every metadata value type (the ten scalar types, strings, arrays of each, arrays of arrays) and
every tensor type we read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) appears in the
good files. Q8_0/Q4_0/Q4_1 data comes from gguf's own quantizer; the package cannot quantize to
the K types, so their blocks are random bytes with finite f16 scales, dequantized by gguf.
The broken files are built field by field (raw_gguf below) so that each lie is exactly one
field: a truncation, an offset past the end, overlapping tensors, counts near 2^64, a string
running past the end, unknown value and tensor types, and the rest listed in bad().
"""
import os
import struct
import sys
import zlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

TYPE_NAMES = {V.UINT8: "UINT8", V.INT8: "INT8", V.UINT16: "UINT16", V.INT16: "INT16", V.UINT32: "UINT32",
              V.INT32: "INT32", V.FLOAT32: "FLOAT32", V.BOOL: "BOOL", V.STRING: "STRING", V.ARRAY: "ARRAY",
              V.UINT64: "UINT64", V.INT64: "INT64", V.FLOAT64: "FLOAT64"}


def scalar_text(vtype, v):
    if vtype == V.STRING:
        return bytes(v).hex() if len(v) else "-"
    if vtype in (V.FLOAT32, V.FLOAT64):
        return f"{float(v):.17g}"
    return str(int(v))


def dump(path):
    """What GGUFReader reads, one line per key and per tensor (test_gguf --dump's format)."""
    r = gguf.GGUFReader(path)
    out = []
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue  # the header, which GGUFReader lists as pseudo-fields
        t = f.types[0]
        if t == V.ARRAY:
            elem = f.types[1]
            if elem == V.ARRAY:  # arrays of arrays: validated and skipped by our reader; count only
                out.append(f"kv {key} ARRAY ARRAY {int(f.parts[4][0])}")  # parts: key len, key, type, elem, count
                continue
            vals = [scalar_text(elem, f.parts[i]) if elem == V.STRING else scalar_text(elem, f.parts[i][0])
                    for i in f.data]
            out.append(f"kv {key} ARRAY {TYPE_NAMES[elem]} {len(vals)} " + " ".join(vals))
        else:
            v = f.parts[f.data[0]]
            out.append(f"kv {key} {TYPE_NAMES[t]} " + scalar_text(t, v if t == V.STRING else v[0]))
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        ne = ",".join(str(int(d)) for d in t.shape)
        crc = zlib.crc32(np.ascontiguousarray(values).tobytes())
        out.append(f"tensor {t.name} {t.tensor_type.name} {ne} {values.size} {crc:08x}")
    return "\n".join(out) + "\n"


def k_blocks(rng, qtype, n_blocks):
    """Random blocks of a K type with finite f16 scales at their place in the block."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    d = rng.uniform(-0.05, 0.05, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    if qtype == Q.Q6_K:
        b[:, 208:210] = d[:, 0:2]
    else:
        b[:, 0:4] = d
    return b


def write_good(d):
    rng = np.random.default_rng(16)
    w = gguf.GGUFWriter(os.path.join(d, "every_type.gguf"), "llama")
    # every scalar type at its edges
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -2147483648)
    w.add_float32("t.f32", -1.0e-3)
    w.add_uint64("t.u64", 2**63 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 3.141592653589793e-300)
    w.add_bool("t.bool_true", True)
    w.add_bool("t.bool_false", False)
    w.add_string("t.string", "Holmes \u00e9\u4e2d\U0001F600 \"quoted\"\n")
    w.add_string("t.empty_string", "")
    for name, vt, vals in [("u8", V.UINT8, [0, 7, 255]), ("i8", V.INT8, [-128, 0, 127]),
                           ("u16", V.UINT16, [1, 65535]), ("i16", V.INT16, [-32768, 5]),
                           ("u32", V.UINT32, [0, 4294967295]), ("i32", V.INT32, [-2147483648, 2147483647]),
                           ("f32", V.FLOAT32, [0.5, -2.25e30, 1e-40]), ("u64", V.UINT64, [2**63 - 1, 3]),
                           ("i64", V.INT64, [-(2**63), 2**62]), ("f64", V.FLOAT64, [1e300, -0.0]),
                           ("bool", V.BOOL, [True, False, True]),
                           ("string", V.STRING, ["a", "", "\u00e9t\u00e9", "Ġthe"])]:
        w.add_key_value("a." + name, vals, V.ARRAY, sub_type=vt)
    w.add_key_value("a.nested", [[1, 2], [3]], V.ARRAY)
    shapes = [(3, 512), (256,)]
    for qtype in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1):
        for k, shape in enumerate(shapes):
            x = rng.standard_normal(shape).astype(np.float32)
            if qtype in (Q.F32, Q.F16, Q.BF16) and k == 1:  # the edges of the float formats
                x[:8] = [np.inf, -np.inf, np.nan, -0.0, 6.0e-8, 1e-39, 65504.0, 3.0e38]
            with np.errstate(over="ignore"):  # 3e38 is inf in F16, as intended
                data = gguf.quants.quantize(x, qtype)
            w.add_tensor(f"{qtype.name.lower()}.{k}", data, raw_dtype=qtype)
    for qtype in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        for k, shape in enumerate(shapes):
            rows = shape[0] if len(shape) == 2 else 1
            blocks = k_blocks(rng, qtype, rows * shape[-1] // 256).reshape(rows, -1)
            w.add_tensor(f"{qtype.name.lower()}.{k}", blocks if len(shape) == 2 else blocks[0], raw_dtype=qtype)
    w.add_tensor("f32.3d", rng.standard_normal((2, 3, 4)).astype(np.float32))
    w.add_tensor("f32.4d", rng.standard_normal((2, 1, 3, 5)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # a file with another alignment, written as version 2 (the same layout as 3)
    w = gguf.GGUFWriter(os.path.join(d, "aligned64_v2.gguf"), "llama")
    w.data_alignment = 64
    w.add_custom_alignment(64)
    w.add_string("general.name", "v2")
    for i in range(3):
        w.add_tensor(f"t{i}", rng.standard_normal((i + 1, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = os.path.join(d, "aligned64_v2.gguf")
    b = bytearray(open(p, "rb").read())
    b[4:8] = struct.pack("<I", 2)
    open(p, "wb").write(b)

    for name in ("every_type", "aligned64_v2"):
        with open(os.path.join(d, name + ".want"), "w") as f:
            f.write(dump(os.path.join(d, name + ".gguf")))


# ---------------------------------------------------------------------------------------
# broken files, built field by field

def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def raw_gguf(kvs=None, tensors=None, magic=b"GGUF", version=3, n_kv=None, n_tensors=None, alignment=32,
             data=None):
    """kvs: list of raw key/value byte strings; tensors: list of (name, dims, type, offset)."""
    if kvs is None:
        kvs = [gstr("general.architecture") + struct.pack("<I", 8) + gstr("llama")]
    if tensors is None:
        tensors = [("a", [32], 0, 0), ("b", [32, 2], 0, 128)]
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs)
    for name, dims, ttype, off in tensors:
        head += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", x) for x in dims)
        head += struct.pack("<IQ", ttype, off)
    head += b"\0" * (-len(head) % alignment)
    if data is None:
        data = np.arange(96, dtype=np.float32).tobytes()
    return head + data


def bad(d):
    cases = []

    def add(name, content, want):
        open(os.path.join(d, name + ".gguf"), "wb").write(content)
        cases.append((name, want))

    good = raw_gguf()
    open(os.path.join(d, "raw_good.gguf"), "wb").write(good)
    assert len(gguf.GGUFReader(os.path.join(d, "raw_good.gguf")).tensors) == 2  # the base file is valid
    kv = gstr("general.architecture") + struct.pack("<I", 8) + gstr("llama")
    # truncated: at every field boundary of the header and inside the data
    for cut in (0, 3, 6, 10, 20, 28, 40, 55, 60, 70, 90, 110, len(good) - 200, len(good) - 1):
        add(f"truncated_{cut}", good[:cut], "")
    add("bad_magic", raw_gguf(magic=b"GGUG"), "magic: not a GGUF file")
    add("version1", raw_gguf(version=1), "version: GGUF version 1 is not supported")
    add("version4", raw_gguf(version=4), "version: 4 is not a GGUF version")
    add("big_endian", raw_gguf(version=0x03000000), "version: a big-endian GGUF file is not supported")
    add("kv_count_huge", raw_gguf(n_kv=2**64 - 1), "metadata_kv_count: 18446744073709551615 entries cannot fit")
    add("tensor_count_huge", raw_gguf(n_tensors=2**63), "tensor_count: 9223372036854775808 tensors cannot fit")
    add("kv_count_lies", raw_gguf(n_kv=3), "")
    add("key_past_end", raw_gguf(kvs=[struct.pack("<Q", 2**64 - 5) + b"general"]),
        "metadata key 0 at offset 24: a string of 18446744073709551611 bytes runs past the end")
    add("string_past_end", raw_gguf(kvs=[gstr("s") + struct.pack("<IQ", 8, 10**9) + b"abc"]),
        "metadata 's' at offset 37: a string of 1000000000 bytes runs past the end")
    add("unknown_value_type", raw_gguf(kvs=[gstr("x.y") + struct.pack("<I", 13) + b"\0" * 8]),
        "metadata 'x.y': unknown value type 13")
    add("unknown_array_type", raw_gguf(kvs=[gstr("x.arr") + struct.pack("<IIQ", 9, 77, 1) + b"\0" * 8]),
        "metadata 'x.arr': unknown array element type 77")
    add("array_count_huge", raw_gguf(kvs=[gstr("x.arr") + struct.pack("<IIQ", 9, 4, 2**62) + b"\0" * 8]),
        "metadata 'x.arr': an array of 4611686018427387904 UINT32 elements does not fit")
    add("string_array_count_huge", raw_gguf(kvs=[gstr("x.s") + struct.pack("<IIQ", 9, 8, 2**64 - 1)]),
        "metadata 'x.s': an array of 18446744073709551615 STRING elements does not fit")
    add("bool_not_0_1", raw_gguf(kvs=[gstr("x.b") + struct.pack("<IB", 7, 2)]), "metadata 'x.b': bool value 2")
    add("duplicate_key", raw_gguf(kvs=[kv, kv]), "metadata 'general.architecture' appears twice")
    add("key_with_nul", raw_gguf(kvs=[gstr(b"a\0b") + struct.pack("<IB", 0, 1)]), "metadata key 0 at offset 32 contains the control byte 0x00")
    add("nested_too_deep", raw_gguf(kvs=[gstr("x.n") + struct.pack("<I", 9) +
                                         struct.pack("<IQ", 9, 1) * 9 + struct.pack("<IQ", 4, 0)]),
        "metadata 'x.n': arrays nested more than 8 deep")
    add("alignment_not_pow2", raw_gguf(kvs=[kv, gstr("general.alignment") + struct.pack("<II", 4, 48)]),
        "metadata 'general.alignment': must be a UINT32 power of two")
    add("alignment_wrong_type", raw_gguf(kvs=[kv, gstr("general.alignment") + struct.pack("<IQ", 10, 32)]),
        "metadata 'general.alignment': must be a UINT32 power of two")
    add("offset_past_end", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [32, 2], 0, 1 << 40)]),
        "tensor 'b': its 256 bytes at data offset 1099511627776 run past the end")
    add("data_truncated", raw_gguf(data=np.zeros(90, np.float32).tobytes()), "tensor 'b': its 256 bytes")
    add("overlap", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [32, 2], 0, 96)]),
        "tensor 'b': its bytes overlap those of tensor 'a'")
    add("misaligned", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [32, 2], 0, 136)]),
        "tensor 'b': offset 136 is not a multiple of the alignment 32")
    add("unknown_tensor_type", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [32, 2], 99, 128)]),
        "tensor 'b': ggml type 99 (unknown) is not supported")
    add("unsupported_tensor_type", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [32, 2], 6, 128)]),
        "tensor 'b': ggml type 6 (Q5_0) is not supported")
    add("block_mismatch", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [48, 1], 8, 128)]),
        "tensor 'b': ne[0] = 48 is not a multiple of Q8_0's block of 32")
    add("five_dims", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [1, 1, 1, 1, 64], 0, 128)]),
        "tensor 'b': 5 dimensions")
    add("zero_dims", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [], 0, 128)]), "tensor 'b': 0 dimensions")
    add("dims_overflow", raw_gguf(tensors=[("a", [32], 0, 0), ("b", [2**32, 2**32], 0, 128)]),
        "tensor 'b': dimensions overflow")
    add("duplicate_tensor", raw_gguf(tensors=[("a", [32], 0, 0), ("a", [32, 2], 0, 128)]),
        "tensor 'a' appears twice")
    with open(os.path.join(d, "bad.tsv"), "w") as f:
        for name, want in cases:
            f.write(f"{name}\t{want}\n")


def tiny_model(path, arch="llama", layers=2, hidden=64, ffn=96, heads=4, kv=2, vocab=300, tied=True,
               extra=None, drop=None, shapes=None, kvs=None):
    """A random llama-architecture GGUF with llama.cpp's names; the arguments break it."""
    rng = np.random.default_rng(5)
    w = gguf.GGUFWriter(path, arch)
    w.add_uint32(f"{arch}.block_count", layers)
    w.add_uint32(f"{arch}.embedding_length", hidden)
    w.add_uint32(f"{arch}.feed_forward_length", ffn)
    w.add_uint32(f"{arch}.attention.head_count", heads)
    w.add_uint32(f"{arch}.attention.head_count_kv", kv)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    for key, (vt, val) in (kvs or {}).items():
        w.add_key_value(key, val, vt)
    D = hidden // heads
    names = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    if not tied:
        names["output.weight"] = (vocab, hidden)
    for i in range(layers):
        names.update({f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
                      f"blk.{i}.attn_q.weight": (heads * D, hidden), f"blk.{i}.attn_k.weight": (kv * D, hidden),
                      f"blk.{i}.attn_v.weight": (kv * D, hidden), f"blk.{i}.attn_output.weight": (hidden, heads * D),
                      f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
                      f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    names.update(extra or {})
    names.update(shapes or {})
    for name, shape in names.items():
        if name != drop:
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32) * 0.1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def models(d):
    tiny_model(os.path.join(d, "model_ok.gguf"))
    tiny_model(os.path.join(d, "model_untied.gguf"), tied=False)
    cases = [
        ("model_arch_gpt2", dict(arch="gpt2"), "metadata 'general.architecture': \"gpt2\" is not llama"),
        ("model_missing_tensor", dict(drop="blk.1.ffn_up.weight"), "tensor 'blk.1.ffn_up.weight' is missing"),
        ("model_missing_layer", dict(drop="blk.1.attn_norm.weight"), "tensor 'blk.1.attn_norm.weight' is missing"),
        ("model_wrong_shape", dict(shapes={"blk.0.attn_k.weight": (48, 64)}),
         "tensor 'blk.0.attn_k.weight' has ne [64, 48] (2 dims), the metadata implies [64, 32]"),
        ("model_bias", dict(extra={"blk.0.attn_q.bias": (64,)}),
         "tensor 'blk.0.attn_q.bias' is not part of a 2-layer llama model"),
        ("model_extra_layer", dict(extra={"blk.2.attn_norm.weight": (64,)}),
         "tensor 'blk.2.attn_norm.weight' is not part of a 2-layer llama model"),
        ("model_kv_heads", dict(kv=3), "metadata 'llama.attention.head_count_kv' 3 does not divide"),
        ("model_rope_scaling", dict(kvs={"llama.rope.scaling.type": (V.STRING, "linear")}),
         "metadata 'llama.rope.scaling.type': RoPE scaling is not supported"),
        ("model_partial_rope", dict(kvs={"llama.rope.dimension_count": (V.UINT32, 8)}),
         "metadata 'llama.rope.dimension_count' 8: partial rotary embeddings (head_dim 16)"),
        ("model_vocab_disagrees", dict(kvs={"llama.vocab_size": (V.UINT32, 301)}),
         "metadata 'llama.vocab_size' 301 differs from token_embd's 300 rows"),
        ("model_heads_string", dict(kvs={"llama.expert_count": (V.STRING, "4")}),
         "metadata 'llama.expert_count': is STRING, expected an integer"),
    ]
    with open(os.path.join(d, "models.tsv"), "w") as f:
        for name, kw, want in cases:
            tiny_model(os.path.join(d, name + ".gguf"), **kw)
            f.write(f"{name}\t{want}\n")


if __name__ == "__main__":
    {"good": write_good, "bad": bad, "models": models}[sys.argv[1]](sys.argv[2])
