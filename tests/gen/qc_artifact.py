"""A reader for quantc artifacts written from docs/artifact-format.md alone
(it shares no code with the C reader), used by tests/test_compile.py.

    art = read("model.qc")
    art["manifest"]                  # the manifest JSON as a dict
    art["tensors"]["model.norm.weight"]   # numpy array, manifest dtype/shape
    dequantize(art, layer)           # float64 weight of a manifest layer
    art["sections"]                  # [{kind, name, target, offset, ...}]
    art["kernels"][(name, target)]   # bytes of a kernels section

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

    sections, raw, kernels = [], {}, {}
    end = 64
    for i in range(count):
        (kind, comp, off, stored, raw_size, csum, name_off, name_len, tgt_off, tgt_len,
         reserved) = struct.unpack_from("<IIQQQQIIIIQ", data, table_off + 64 * i)
        s = dict(index=i, kind=KINDS[kind], compression=["none", "zstd"][comp], offset=off,
                 stored_size=stored, raw_size=raw_size, name=pool_str(name_off, name_len),
                 target=pool_str(tgt_off, tgt_len), checksum=csum)
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
        if s["kind"] == "kernels":
            kernels[(s["name"], s["target"])] = body
    manifest = json.loads(raw[("manifest", "manifest.json")])
    tensors = {}
    for (kind, name), body in raw.items():
        if kind != "tensor":
            continue
        spec = manifest["tensors"][name]
        if spec["dtype"] == "BF16":
            a = (np.frombuffer(body, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif spec["dtype"] in DTYPES:
            a = np.frombuffer(body, DTYPES[spec["dtype"]])
        else:  # a GGUF block type (Q8_0, Q4_K, ...): the raw blocks, undecoded
            tensors[name] = np.frombuffer(body, np.uint8)
            continue
        tensors[name] = a.reshape(spec["shape"])
    tokenizer = {name: body for (kind, name), body in raw.items() if kind == "tokenizer"}
    return dict(manifest=manifest, tensors=tensors, sections=sections, tokenizer=tokenizer,
                kernels=kernels, size=len(data))


def unpack_codes(packed, cols, bits):
    """rowmajor-lsb: each row's bytes are one little-endian bit string, code c
    at bits [c*bits, (c+1)*bits)."""
    rows = packed.shape[0]
    b = np.unpackbits(packed, axis=1, bitorder="little")[:, :cols * bits]
    b = b.reshape(rows, cols, bits).astype(np.int64)
    return (b << np.arange(bits)).sum(axis=2)


CHUNKS = {2: [2], 3: [2, 1], 4: [4], 5: [4, 1], 6: [4, 2], 7: [4, 2, 1], 8: [4, 4]}


def _align64(v):
    return (v + 63) // 64 * 64


def unpack_qcpack1(blob, layer):
    """Layout qcpack1 (docs/artifact-format.md): returns original-order codes
    (rows x cols), scales and zeros per packed group (float64), the packed
    group of each original column, and the outlier / low-rank parts."""
    rows, cols, bits = layer["rows"], layer["cols"], layer["bits"]
    G = layer["group_size"] if 0 < layer["group_size"] < cols else 0
    sym, permuted = layer["symmetric"], layer["permuted"]
    nnz, rank = layer.get("outliers", 0), layer.get("rank", 0)
    assert bytes(blob[:8]) == b"QCPACK1\0", "qcpack1 magic"
    hdr_nnz, total = struct.unpack_from("<QQ", bytes(blob[16:32]))
    assert hdr_nnz == nnz and total == len(blob), (hdr_nnz, total, len(blob))
    tiles = (cols + 63) // 64
    row_bytes = tiles * 8 * bits
    ng = (cols + G - 1) // G if G else 1
    off, at = 64, {}
    for name, size, present in (("codes", rows * row_bytes, True),
                                ("scales", (rows * ng + 8) * 2, True),
                                ("zeros", rows * ng + 8, not sym),
                                ("perm", cols * 4, permuted),
                                ("lr_a", rows * rank * 2, rank > 0),
                                ("lr_b", rank * cols * 2, rank > 0),
                                ("row_ptr", (rows + 1) * 4, nnz > 0),
                                ("col", nnz * 4, nnz > 0),
                                ("val", nnz * 2, nnz > 0)):
        at[name] = _align64(off)
        off = at[name] + (size if present else 0)
    assert _align64(off) == len(blob), "qcpack1 size"
    b = np.asarray(blob, dtype=np.uint8)
    tile = b[at["codes"]:at["codes"] + rows * row_bytes].reshape(rows, tiles, 8 * bits)
    stream = np.zeros((rows, tiles, 8, bits), np.uint8)  # [row, tile, lane, stream byte]
    sb = 0
    for K in CHUNKS[bits]:
        stream[:, :, :, sb:sb + K] = tile[:, :, 8 * sb:8 * sb + 8 * K].reshape(rows, tiles, 8, K)
        sb += K
    S = (stream.astype(np.uint64) << (8 * np.arange(bits, dtype=np.uint64))).sum(axis=3)
    j = np.arange(8, dtype=np.uint64)
    # codes[row, tile, slot j, lane l] -> packed column 64 t + 8 j + l
    pc = ((S[:, :, None, :] >> (j[None, None, :, None] * np.uint64(bits))) &
          np.uint64((1 << bits) - 1)).reshape(rows, tiles * 64)[:, :cols].astype(np.int64)
    perm = (b[at["perm"]:at["perm"] + 4 * cols].view("<i4").astype(np.int64) if permuted
            else np.arange(cols))
    codes = np.zeros((rows, cols), np.int64)
    codes[:, perm] = pc
    group = np.zeros(cols, np.int64)
    group[perm] = np.arange(cols) // G if G else 0
    scales = b[at["scales"]:at["scales"] + 2 * rows * ng].view("<f2").astype(np.float64).reshape(rows, ng)
    zeros = (b[at["zeros"]:at["zeros"] + rows * ng].astype(np.float64).reshape(rows, ng) if not sym
             else np.full((rows, ng), 2.0 ** (bits - 1)))
    extra = {}
    if nnz:
        extra["row_ptr"] = b[at["row_ptr"]:at["row_ptr"] + 4 * (rows + 1)].view("<i4")
        extra["col"] = b[at["col"]:at["col"] + 4 * nnz].view("<i4")
        extra["val"] = b[at["val"]:at["val"] + 2 * nnz].view("<f2")
    if rank:
        extra["a"] = b[at["lr_a"]:at["lr_a"] + 2 * rows * rank].view("<f2").reshape(rows, rank)
        extra["b"] = b[at["lr_b"]:at["lr_b"] + 2 * rank * cols].view("<f2").reshape(rank, cols)
    return codes, scales, zeros, group, extra


PLANES = {2: [2], 3: [2, 1], 4: [4], 5: [4, 1], 6: [4, 2], 7: [4, 2, 1], 8: [8]}


def _align256(v):
    return (v + 255) // 256 * 256


def unpack_qccuda1(blob, layer):
    """Layout qccuda1 (docs/artifact-format.md, the CUDA kernels' layout):
    returns original-order codes (rows x cols) and scales and zeros per
    packed group (float64), as unpack_qcpack1."""
    rows, cols, bits = layer["rows"], layer["cols"], layer["bits"]
    G = layer["group_size"] if 0 < layer["group_size"] < cols else 0
    sym, nnz, rank = layer["symmetric"], layer.get("outliers", 0), layer.get("rank", 0)
    assert bytes(blob[:8]) == b"QCCUDA1\0", "qccuda1 magic"
    hdr_nnz, total = struct.unpack_from("<QQ", bytes(blob[16:32]))
    assert hdr_nnz == nnz and total == len(blob), (hdr_nnz, total, len(blob))
    rt_n = ((rows + 15) // 16 + 1) // 2 * 2
    kt_n = (cols + 255) // 256
    ng = (cols + G - 1) // G if G else 1
    szb = 4 if sym else 8
    permuted = layer["permuted"]
    off, at = 64, {}
    for name, size in (("codes", rt_n * kt_n * bits * 512), ("sz", rt_n * ng * 8 * szb),
                       ("perm", cols * 4 if permuted else 0), ("lr_a", rows * rank * 2),
                       ("lr_b", rank * cols * 2), ("row_ptr", (rows + 1) * 4 if nnz else 0),
                       ("col", nnz * 4), ("val", nnz * 2)):
        at[name] = _align256(off)
        off = at[name] + size
    assert _align256(off) == len(blob), "qccuda1 size"
    b = np.asarray(blob, dtype=np.uint8)
    o = np.arange(rows)[:, None]
    p = np.arange(cols)[None, :]
    rt, rr, kt, kk = o // 16, o % 16, p // 256, p % 256
    within, e = kk % 32, kk % 4
    mma = (kk // 32) * 2 + (within % 8) // 4  # column 32b + 8q + 4j + e: mma 2b + j
    c16 = 2 * (within // 8) + np.where(e < 2, e, 8 + e - 2)  # its K index in the mma
    r = rr // 8 + 2 * (c16 // 8)  # fragment register
    lane = 4 * (rr % 8) + (c16 % 8) // 2
    P, hi = 4 * mma + r, c16 % 2
    words = b[at["codes"]:at["codes"] + rt_n * kt_n * bits * 512].view("<u4").astype(np.int64)
    pc = np.zeros((rows, cols), np.int64)
    ubase, shift = 0, 0
    for w in PLANES[bits]:
        n = 16 // w
        m = P // n
        u = ubase + m // 4
        word = words[(((rt * kt_n + kt) * bits + u) * 512 + lane * 16 + (m % 4) * 4) // 4]
        pc |= ((word >> (w * (P % n) + 16 * hi)) & ((1 << w) - 1)) << shift
        ubase, shift = ubase + w, shift + w
    perm = (b[at["perm"]:at["perm"] + 4 * cols].view("<i4").astype(np.int64) if permuted
            else np.arange(cols))
    codes = np.zeros((rows, cols), np.int64)
    codes[:, perm] = pc
    gi = np.arange(ng)[None, :]
    rec = at["sz"] + ((o // 16 * ng + gi) * 8 + o % 8) * szb + 2 * ((o % 16) // 8)
    half = lambda a: (b[a].astype(np.uint16) | b[a + 1].astype(np.uint16) << 8).view("<f2")  # noqa: E731
    scales = half(rec).astype(np.float64)
    zeros = (half(rec + 4).astype(np.float64) - 1024 if not sym
             else np.full((rows, ng), 2.0 ** (bits - 1)))
    return codes, scales, zeros


def dequantize(art, layer):
    """W[r][c] = scale[r][g] * (code[r][c] - zero[r][g]), plus sparse
    outliers and A @ B when the layer has them. Returns (W, codes)."""
    t = art["tensors"]
    parts, bits, cols = layer["tensors"], layer["bits"], layer["cols"]
    if layer["layout"] == "qcpack1":
        codes, scales, zeros, g, extra = unpack_qcpack1(t[parts["packed"]], layer)
        rp, col, val = extra.get("row_ptr"), extra.get("col"), extra.get("val")
        lr = (extra["a"], extra["b"]) if "a" in extra else None
    else:
        assert layer["layout"] == "rowmajor-lsb", layer["layout"]
        codes = unpack_codes(t[parts["qweight"]], cols, bits)
        scales = t[parts["scales"]].astype(np.float64)
        zeros = (t[parts["zeros"]].astype(np.float64) if "zeros" in parts
                 else np.full_like(scales, 2 ** (bits - 1)))
        gs = layer["group_size"]
        g = t[parts["g_idx"]] if "g_idx" in parts else (np.arange(cols) // gs if gs else np.zeros(cols, int))
        rp = col = val = lr = None
        if layer.get("outliers", 0):
            rp, col, val = (t[parts[k]] for k in ("outlier_row_ptr", "outlier_col", "outlier_val"))
        if layer.get("rank", 0):
            lr = (t[parts["lowrank_a"]], t[parts["lowrank_b"]])
    w = scales[:, g] * (codes - zeros[:, g])
    if rp is not None:
        for r in range(w.shape[0]):
            w[r, col[rp[r]:rp[r + 1]]] += val[rp[r]:rp[r + 1]].astype(np.float64)
    if lr is not None:
        w += lr[0].astype(np.float64) @ lr[1].astype(np.float64)
    return w, codes
