"""Writes a copy of a GGUF model keeping only its first N blocks (metadata,
tokenizer and embeddings unchanged, block_count set to N). The result is a
small real-weights model for cross-checks against Hugging Face transformers on
a machine the full file cannot be carried to.

    python3 tests/gen/make_gguf_subset.py IN.gguf OUT.gguf [N=2]
"""
import sys

import gguf


def main():
    src, dst = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        if key == f"{arch}.block_count":
            w.add_uint32(key, n)
            continue
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(key, f.contents(), vtype)
    for t in r.tensors:
        if t.name.startswith("blk."):
            if int(t.name.split(".")[1]) >= n:
                continue
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
