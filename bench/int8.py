"""Encoder runtimes side by side on SciFact abstracts: cosine to ONNX Runtime fp32, a text's vector
alone vs in a batch of 32 others, and texts/s in interleaved rounds (medians, ratios to onnx fp32).

    python bench/int8.py [--docs 120] [--rounds 3]

Runtimes: onnx fp32, onnx static int8 (RAG_QUANTIZE), openvino with OpenVINO's own precision
(bf16 on CPUs with native bf16) and openvino forced to fp32 (what a CPU without bf16 runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
sys.path.insert(0, str(REPO))


def main() -> None:
    import numpy as np

    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec, cpu_summary, load_encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(cpu_summary())
    cache = Path(tempfile.mkdtemp(prefix="rag-int8-"))
    try:
        spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
        encoders = {
            "onnx fp32": load_encoder(spec, "onnx", cache_dir=cache),
            "onnx static int8": load_encoder(spec, "onnx", quantize=True, cache_dir=cache),
            "openvino auto precision": load_encoder(spec, "openvino", dtype="auto", cache_dir=cache),
            "openvino fp32": load_encoder(spec, "openvino", dtype="float32", cache_dir=cache),
        }
        with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
            texts = [r["title"] + " " + r["text"] for r in map(json.loads, handle)][: args.docs]
        reference = encoders["onnx fp32"].encode(texts)
        for name, encoder in encoders.items():
            cosine = np.sum(encoder.encode(texts) * reference, axis=1)
            alone = encoder.encode(texts[:1])[0]
            batched = encoder.encode(texts[:1] + texts[-32:])[0]
            print(f"{name}: cosine to onnx fp32 mean {cosine.mean():.5f} min {cosine.min():.5f}; alone vs in a batch of 32: "
                  f"cosine {float(alone @ batched):.8f}, bit-identical {bool(np.array_equal(alone, batched))}", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in encoders}
        half = texts[: max(1, len(texts) // 2)]
        for round_no in range(args.rounds):
            names = list(encoders)
            for name in names[round_no % len(names):] + names[: round_no % len(names)]:
                started = time.perf_counter()
                encoders[name].encode(half)
                seconds[name].append(time.perf_counter() - started)
        base = statistics.median(seconds["onnx fp32"])
        for name, runs in seconds.items():
            print(f"{name}: {len(half) / statistics.median(runs):.1f} texts/s (median of {args.rounds}), x{base / statistics.median(runs):.2f} onnx fp32")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
