"""Precision and recall of the instruction-like passage detector (`rag.injection`).

The labelled set: instruction-like passages written for it in varied paraphrases, and ordinary
ones hand-written to look like instructions to people (how-tos, rules: "You must register ..."),
in `tests/data/instruction_passages.jsonl`; plus ordinary passages from SQuAD dev contexts and
SciFact abstracts. Every other item of each group is design (the threshold is chosen there), the
rest test (reported, never used to choose). The old phrase list is scored the same way.

    python bench/injection.py [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"
LABELLED = ROOT / "tests" / "data" / "instruction_passages.jsonl"
PER_CORPUS = 400

# The phrase list this detector replaced (rag/verifiers/text.py before issue 26), for comparison.
OLD = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instruction|instructions|prompt|rules?|above|previous|guidelines|context)\b"
    r"|\byou (must|should|are now|will|have to|need to) (now )?(answer|say|reply|respond|output|ignore|write|state|print|claim|tell)\b"
    r"|\b(answer|reply|respond|say|output)\s+(with\s+)?[\"'“]?\w+[\"'”]?\s+(to|for)\s+(every|all|any)\b"
    r"|\b(the|your) answer to (every|all|any|each) questions?\b"
    r"|\bsystem prompt\b|\bnew (instructions?|rules?|task)\b|\bfrom (now on|the administrator)\b"
    r"|(^|\n|[.!?]\s)\s*(system|assistant|admin|administrator|developer)\s*:"
    r"|<\|?(system|im_start|im_end|assistant)\|?>|\[/?INST\]"
    r"|\b(as an ai|language model),? (you|ignore)\b",
    re.IGNORECASE | re.DOTALL,
)


def labelled_set() -> list[dict[str, Any]]:
    """Every item with its label, group and split."""
    groups: dict[str, list[tuple[str, bool]]] = {"written-instruction": [], "written-ordinary": []}
    for line in LABELLED.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        instruction = row["label"] == "instruction"
        groups["written-instruction" if instruction else "written-ordinary"].append((row["text"], instruction))
    squad = json.loads((DATA / "squad" / "squad-v1.1-dev-articles-01-24.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    step = max(1, len(contexts) // PER_CORPUS)
    groups["squad"] = [(c, False) for c in contexts[::step][:PER_CORPUS]]
    with (DATA / "beir" / "scifact" / "corpus.jsonl").open(encoding="utf-8") as handle:
        abstracts = [json.loads(line)["text"] for line in handle]
    step = max(1, len(abstracts) // PER_CORPUS)
    groups["scifact"] = [(a, False) for a in abstracts[::step][:PER_CORPUS]]
    _ = gzip  # the rebuilt SQuAD train set is not needed: dev contexts are ordinary text enough
    return [
        {"group": group, "text": text, "instruction": label, "split": "design" if i % 2 == 0 else "test"}
        for group, items in groups.items()
        for i, (text, label) in enumerate(items)
    ]


def scores(items: list[dict[str, Any]], flagged: list[bool]) -> dict[str, Any]:
    tp = sum(f and i["instruction"] for f, i in zip(flagged, items))
    fp = sum(f and not i["instruction"] for f, i in zip(flagged, items))
    fn = sum(not f and i["instruction"] for f, i in zip(flagged, items))
    per_group = {
        g: sum(f for f, i in zip(flagged, items) if i["group"] == g) for g in sorted({i["group"] for i in items})
    }
    return {
        "items": len(items),
        "instruction": tp + fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "flagged_per_group": per_group,
        "group_sizes": {g: sum(i["group"] == g for i in items) for g in per_group},
    }


def main() -> None:
    from rag.injection import THRESHOLD, instruction_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = labelled_set()
    values = [instruction_score(i["text"]) for i in items]
    result: dict[str, Any] = {"threshold": THRESHOLD, "thresholds_on_design": {}}
    design = [n for n, i in enumerate(items) if i["split"] == "design"]
    for t in range(2, 10):
        s = scores([items[n] for n in design], [values[n] >= t for n in design])
        result["thresholds_on_design"][t] = {k: s[k] for k in ("precision", "recall")}
    for split in ("design", "test"):
        chosen = [n for n, i in enumerate(items) if i["split"] == split]
        part = [items[n] for n in chosen]
        result[split] = {
            "detector": scores(part, [values[n] >= THRESHOLD for n in chosen]),
            "old_phrase_list": scores(part, [bool(OLD.search(i["text"])) for i in part]),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"threshold {THRESHOLD}; precision/recall by threshold on the design split:")
    for t, s in result["thresholds_on_design"].items():
        print(f"  {t}: precision {s['precision']:.3f} recall {s['recall']:.3f}")
    for split in ("design", "test"):
        for name, s in result[split].items():
            print(
                f"{split:6} {name:15} items {s['items']:4} instruction {s['instruction']:3} precision {s['precision']:.3f} "
                f"recall {s['recall']:.3f} flagged {s['flagged_per_group']} of {s['group_sizes']}"
            )


if __name__ == "__main__":
    main()
