"""Tokens the encoder embeds per SciFact document, real and padded, for chunking settings vs the
naive baseline (title + text cut at 256 tokens): where ingest's embedding work goes.

    python bench/tokens.py [--settings 200/32/title,230/0/title,254/0/none]

A setting is chunk tokens / overlap / `title` (the title in every chunk's embedded text) or
`none`; "lost" counts the tokens the encoder's 256-token limit cuts off a chunk's title + text.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir" / "scifact"
sys.path.insert(0, str(REPO))


def padded_sorted(lengths: list[int], budget: int = 16384, max_batch: int = 128) -> int:
    """Tokens computed by `Encoder.encode`'s batching: length-sorted, under a token budget."""
    order = sorted(lengths, reverse=True)
    total, start = 0, 0
    while start < len(order):
        size = max(1, min(max_batch, budget // order[start]))
        total += order[start] * len(order[start : start + size])
        start += size
    return total


def padded_in_order(lengths: list[int], batch: int = 64) -> int:
    """Tokens computed by batches of 64 in input order, padded to their longest."""
    return sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="200/32/title,200/0/title,230/0/title,254/0/none,200/32/none")
    args = parser.parse_args()
    from indexes.encoder import DEFAULT_EMBEDDER, EncoderSpec
    from indexes.encoder.export import exported_tokenizer
    from ingest.chunking import SentenceWindowChunker

    spec = EncoderSpec.detect(DEFAULT_EMBEDDER)
    cache = Path(tempfile.mkdtemp(prefix="rag-tokens-"))
    try:
        tokenizer = exported_tokenizer(spec, cache)[0]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    n = len(docs)
    base = [len(ids) for ids in tokenizer.ids([d["title"] + " " + d["text"] for d in docs], 256)]
    print(f"baseline (title + text, cut at 256): {sum(base) / n:.1f} real tokens/doc; padded: length-sorted "
          f"{padded_sorted(base) / n:.1f}, batches of 64 in order {padded_in_order(base) / n:.1f}")
    for setting in args.settings.split(","):
        tokens_text, overlap_text, title_text = setting.split("/")
        chunk_tokens, overlap, title = int(tokens_text), int(overlap_text), title_text == "title"
        chunker = SentenceWindowChunker(tokenizer, chunk_tokens, overlap)
        texts = [
            f"{d['title']} {c.text}" if title and d["title"] else c.text for d in docs for c in chunker.split(d["text"])
        ]
        lengths = [len(ids) for ids in tokenizer.ids(texts, 256)]
        lost = sum(len(ids) for ids in tokenizer.ids(texts, 100_000)) - sum(lengths)
        real = sum(lengths)
        print(f"chunks {chunk_tokens}/{overlap}, title {'in every chunk' if title else 'left out'}: {len(texts) / n:.2f} passages/doc, "
              f"{real / n:.1f} real tokens/doc (x{real / sum(base):.2f} of the baseline), {lost / n:.1f} lost to the 256 limit; pad share: length-sorted "
              f"{1 - real / padded_sorted(lengths):.1%}, batches of 64 in order {1 - real / padded_in_order(lengths):.1%}")


if __name__ == "__main__":
    main()
