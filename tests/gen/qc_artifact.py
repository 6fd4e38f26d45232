"""A reader for quantc artifacts written from docs/artifact-format.md alone
(it shares no code with the C reader), used by tests/test_compile.py.

    art = read("model.qc")
    art["manifest"]                  # the manifest JSON as a dict
    art["tensors"]["model.norm.weight"]   # numpy array, manifest dtype/shape
    dequantize(art, layer)           # float64 weight of a manifest layer
    art["sections"]                  # [{kind, name, target, offset, ...}]

Checksums are verified when the `xxhash` package is importable (XXH3-64);
zstd sections need the `zstandard` package. Without them those checks or
sections are skipped / refused, never silently misread."""
import json
import struct

import numpy as np

MAGIC = b"\x89QCA\r\n\x1a\n"
KINDS = {1: "manifest", 2: "tokenizer", 3: "tensor", 4: "kernels"}
DTYPES = {"F32": "<f4", "F16": "<f2", "U8": "u1", "I32": "<i4"}


def _xxh3(data):
    try:
        import xxhash
    except ImportError:
        return None
    return xxhash.xxh3_64_intdigest(data)


def read(path):
    data = open(path, "rb").read()
    if data[:8] != MAGIC:
        raise ValueError(f"{path}: bad magic")
    (version, header_size, count, entry_size, table_off, table_size, file_size, table_sum,
     header_sum) = struct.unpack_from("<IIIIQQQQQ", data, 8)
    if version != 1 or header_size != 64 or entry_size != 64:
        raise ValueError(f"{path}: version {version}, header {header_size}, entry {entry_size}")
    if file_size != len(data) or table_off + table_size != len(data):
        raise ValueError(f"{path}: sizes do not match the file")
    if _xxh3(data[:56]) not in (None, header_sum) or _xxh3(data[table_off:]) not in (None, table_sum):
        raise ValueError(f"{path}: header or table checksum mismatch")
    pool = data[table_off + 64 * count:]

    def pool_str(off, n):
        if n == 0:
            return ""
        if pool[off + n] != 0:
            raise ValueError(f"{path}: name not NUL-terminated")
        return pool[off:off + n].decode("utf-8")

    sections, raw = [], {}
    end = 64
    for i in range(count):
        (kind, comp, off, stored, raw_size, csum, name_off, name_len, tgt_off, tgt_len,
         reserved) = struct.unpack_from("<IIQQQQIIIIQ", data, table_off + 64 * i)
        s = dict(index=i, kind=KINDS[kind], compression=["none", "zstd"][comp], offset=off,
                 stored_size=stored, raw_size=raw_size, name=pool_str(name_off, name_len),
                 target=pool_str(tgt_off, tgt_len))
        align = 4096 if s["kind"] == "tensor" and comp == 0 and stored >= 4096 else 64
        if off % align or off < end or off + stored > table_off or reserved:
            raise ValueError(f"{path}: section {i} misplaced")
        if any(data[end:off]):
            raise ValueError(f"{path}: padding before section {i} is not zero")
        body = data[off:off + stored]
        if _xxh3(body) not in (None, csum):
            raise ValueError(f"{path}: section {i} '{s['name']}': checksum mismatch")
        if comp == 1:
            import zstandard
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_size)
        if len(body) != raw_size:
            raise ValueError(f"{path}: section {i}: size mismatch")
        end = off + stored
        sections.append(s)
        raw[(s["kind"], s["name"])] = body
    manifest = json.loads(raw[("manifest", "manifest.json")])
    tensors = {}
    for (kind, name), body in raw.items():
        if kind != "tensor":
            continue
        spec = manifest["tensors"][name]
        if spec["dtype"] == "BF16":
            a = (np.frombuffer(body, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(body, DTYPES[spec["dtype"]])
        tensors[name] = a.reshape(spec["shape"])
    tokenizer = {name: body for (kind, name), body in raw.items() if kind == "tokenizer"}
    return dict(manifest=manifest, tensors=tensors, sections=sections, tokenizer=tokenizer,
                size=len(data))


def unpack_codes(packed, cols, bits):
    """rowmajor-lsb: each row's bytes are one little-endian bit string, code c
    at bits [c*bits, (c+1)*bits)."""
    rows = packed.shape[0]
    b = np.unpackbits(packed, axis=1, bitorder="little")[:, :cols * bits]
    b = b.reshape(rows, cols, bits).astype(np.int64)
    return (b << np.arange(bits)).sum(axis=2)


def dequantize(art, layer):
    """W[r][c] = scale[r][g] * (code[r][c] - zero[r][g]), g = g_idx[c], plus
    sparse outliers and A @ B when the layer has them."""
    t = art["tensors"]
    parts, bits, cols = layer["tensors"], layer["bits"], layer["cols"]
    assert layer["layout"] == "rowmajor-lsb"
    codes = unpack_codes(t[parts["qweight"]], cols, bits)
    scales = t[parts["scales"]].astype(np.float64)
    zeros = (t[parts["zeros"]].astype(np.float64) if "zeros" in parts
             else np.full_like(scales, 2 ** (bits - 1)))
    gs = layer["group_size"]
    g = t[parts["g_idx"]] if "g_idx" in parts else (np.arange(cols) // gs if gs else np.zeros(cols, int))
    w = scales[:, g] * (codes - zeros[:, g])
    if layer.get("outliers", 0):
        rp, col, val = (t[parts[k]] for k in ("outlier_row_ptr", "outlier_col", "outlier_val"))
        for r in range(w.shape[0]):
            w[r, col[rp[r]:rp[r + 1]]] += val[rp[r]:rp[r + 1]].astype(np.float64)
    if layer.get("rank", 0):
        w += t[parts["lowrank_a"]].astype(np.float64) @ t[parts["lowrank_b"]].astype(np.float64)
    return w, codes
