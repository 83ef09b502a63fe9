"""Labelled (question, claim, passage) sets for the support judge, built at run time from data
outside the repository, each split into a design part (thresholds and guards are chosen on it) and
a test part (only reported), deterministically by article or claim id.

Sources (`build_set`):
- `squad`: the shared SQuAD dev articles. Design = articles 1-12 (the articles the reader's
  abstention was calibrated on, so every choice of the project is made there), test = articles
  13-24 (held out of every choice). Per question, from its first gold answer: the gold sentence,
  the answer alone ("Warsaw.", read with its question) and, for a share of questions, the sentence
  with its subject as a pronoun, and year-bearing gold sentences (supported); the answer swapped for
  another answer of the article (in the sentence and alone), another name of the answer's sentence
  for a name answer (`swap-near-answer`), the answer to another question of the same paragraph
  (`swap-paragraph-answer`: stated by the passage, not what was asked), a number changed, a
  negation added, two names swapped, the gold sentence against another paragraph of the article
  without the answer (unsupported).
- `scifact`: BEIR SciFact claims with the abstract their rationale cites: SUPPORT pairs are
  supported; CONTRADICT pairs and a claim against another claim's cited abstract are not. Test = odd
  claim ids; design = even ids not divisible by 4; train = ids divisible by 4 (`scifact_part`; until
  the trained judge, design was every even id).
- `written`: `examples/verification-written.jsonl` (hand-written passive forms, pronouns,
  paraphrases, swaps), split by a hash of the case id.

`sample` caps each (source, kind) at a number of pairs, chosen evenly (by a hash of the id), so a
run stays within minutes on two cores.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from indexes.errors import InvalidInput
from rag.evaluation.files import read_utf8
from rag.evaluation.squad import load_squad_json, normalize_answer
from rag.evaluation.verifiers import VerifierCase, read_cases

Part = Literal["design", "test", "train", "all"]
SOURCES = ("squad", "scifact", "written")
SQUAD_DESIGN_ARTICLES = 12  # articles 1..12 design, 13..24 test
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
_NUMBER = re.compile(r"\b\d+(?:[.,]\d+)?\b")
_AUX = re.compile(r"\b(is|was|are|were|has|had|did|does|can|will|would)\b")
_NAME_RUN = re.compile(r"\b[A-Z][a-z][\w'-]*(?:\s+[A-Z][a-z][\w'-]*)*")


def _stable(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def _sentences(text: str) -> list[tuple[int, int]]:
    import blingfire

    return [(s, e) for s, e in blingfire.text_to_sentences_and_offsets(text)[1]]


def _sentence_at(context: str, at: int) -> str:
    for s, e in _sentences(context):
        if s <= at < e:
            return context[s:e].strip()
    return ""


def _replace_once(text: str, old: str, new: str) -> str | None:
    i = text.find(old)
    return text[:i] + new + text[i + len(old) :] if i >= 0 else None


def _change_number(sentence: str, rng: random.Random) -> str | None:
    numbers = _NUMBER.findall(sentence)
    if not numbers:
        return None
    old = rng.choice(numbers)
    if not old.replace(",", "").replace(".", "").isdigit():
        return None
    value = int(old.replace(",", "").split(".")[0])
    new = str(value + rng.choice([-3, -2, -1, 1, 2, 3, 10]) if _YEAR.fullmatch(old) else value + rng.choice([1, 2, 5, 10]) if value < 100 else value * 2)
    return re.sub(rf"\b{re.escape(old)}\b", new, sentence, count=1)


def _negate(sentence: str) -> str | None:
    if re.search(r"\b(not|never|no)\b|n't", sentence):
        return None
    match = _AUX.search(sentence)
    return sentence[: match.end()] + " not" + sentence[match.end() :] if match else None


def _swap_names(sentence: str) -> str | None:
    """Two different names (runs of capitalised words, not the sentence's first word) exchanged
    across a lower-case word: who did what to whom."""
    found = [(m.start(), m.end(), m.group(0)) for m in _NAME_RUN.finditer(sentence) if m.start() > 0]
    for i, (s1, e1, a) in enumerate(found):
        for s2, e2, b in found[i + 1 :]:
            if a != b and re.search(r"\b[a-z]{3,}\b", sentence[e1:s2]):
                return sentence[:s1] + b + sentence[e1:s2] + a + sentence[e2:]
    return None


def _near_name(sentence: str, answer: str, rng: random.Random) -> str | None:
    """Another name of the answer's own sentence, for a name answer ("Leylah Fernandez" for who won,
    when "Emma Raducanu defeated Leylah Fernandez"): the confusion of roles a short answer invites."""
    if not answer[:1].isupper():
        return None
    said = normalize_answer(answer)
    names = sorted({m.group(0) for m in _NAME_RUN.finditer(sentence)})
    others = [n for n in names if len(n) >= 3 and normalize_answer(n) and normalize_answer(n) not in said and said not in normalize_answer(n)]
    return rng.choice(others) if others else None


def _pronoun(sentence: str, title: str) -> str | None:
    """The sentence with the article's subject (its title, as the sentence's first words) as "It"."""
    name = title.replace("_", " ")
    rest = sentence[len(name) + 1 :]
    if not name or not sentence.startswith(name + " ") or not re.match(r"[a-z]{2,} \w", rest):
        return None  # the title must be the whole subject, a verb next ("Warsaw University ..." is not Warsaw)
    return "It " + rest


def squad_cases(path: str | Path, part: str | None = None, limit: int | None = None) -> list[VerifierCase]:
    """The pairs of every answered question of a SQuAD file (the first `limit` questions), each
    article in the design or test part by its position, or all in `part` (a training file)."""
    data = load_squad_json(path)["data"]
    cases: list[VerifierCase] = []
    done: set[tuple[str, str, str, str]] = set()
    asked = 0
    for a, article in enumerate(data):
        article_part = part or ("design" if a < SQUAD_DESIGN_ARTICLES else "test")
        title = article.get("title", "").replace("_", " ")
        paragraphs = [p["context"] for p in article.get("paragraphs", [])]
        answers = sorted({qa["answers"][0]["text"] for p in article["paragraphs"] for qa in p["qas"] if qa.get("answers")})
        normal_answers = {o: normalize_answer(o) for o in answers}
        normal_paragraphs = [f" {normalize_answer(c)} " for c in paragraphs]
        for p, par in enumerate(article.get("paragraphs", [])):
            context = par["context"]
            for qa in par.get("qas", []):
                if not qa.get("answers"):
                    continue
                asked += 1
                if limit is not None and asked > limit:
                    return cases
                gold = qa["answers"][0]
                answer, question = gold["text"].strip(), qa["question"].strip()
                sentence = _sentence_at(context, int(gold["answer_start"]))
                if not answer or not sentence or answer not in sentence:
                    continue
                rng = random.Random(_stable(qa["id"]))
                key = f"squad-{article_part}-{qa['id']}"

                made: list[tuple[str, bool, str, str]] = []  # (kind, label, claim, passage)
                made.append(("sentence-year" if _YEAR.search(sentence) else "sentence", True, sentence, context))
                made.append(("answer", True, f"{answer}.", context))
                pronoun = _pronoun(sentence, title)
                if pronoun:
                    made.append(("pronoun", True, pronoun, context))
                normal = normal_paragraphs[p]
                others = [o for o, n in normal_answers.items() if n and f" {n} " not in normal and o != answer]
                if others:
                    other = rng.choice(others)
                    swapped = _replace_once(sentence, answer, other)
                    if swapped:
                        made.append(("swap-sentence", False, swapped, context))
                    made.append(("swap-answer", False, f"{other}.", context))
                # kinds added later draw from their own generators, so the earlier kinds' pairs stay as reported
                near = _near_name(sentence, answer, random.Random(_stable(qa["id"] + "/near")))
                if near:
                    made.append(("swap-near-answer", False, f"{near}.", context))
                # the answer to another question of the same paragraph: stated by the passage, but
                # not what this question asks (the relevance a support check must also see)
                said_here = normalize_answer(answer)
                neighbours = sorted(
                    {
                        o["answers"][0]["text"].strip()
                        for o in par.get("qas", [])
                        if o.get("answers") and o is not qa
                        and normalize_answer(o["answers"][0]["text"]) not in said_here
                        and said_here not in normalize_answer(o["answers"][0]["text"])
                    }
                )
                if neighbours:
                    pick = random.Random(_stable(qa["id"] + "/paragraph")).choice(neighbours)
                    made.append(("swap-paragraph-answer", False, f"{pick}.", context))
                for kind, changed in (("number", _change_number(sentence, rng)), ("negation", _negate(sentence)), ("name-swap", _swap_names(sentence))):
                    if changed and changed != sentence:
                        made.append((kind, False, changed, context))
                said = f" {normal_answers.get(answer) or normalize_answer(answer)} "
                elsewhere = [c for i, c in enumerate(paragraphs) if i != p and said not in normal_paragraphs[i]]
                if elsewhere:
                    made.append(("wrong-passage", False, sentence, rng.choice(elsewhere)))
                for kind, label, claim, passage in made:
                    # a sentence shared by several questions is one pair; a bare answer is read with its question
                    seen = (kind, claim, passage, question if kind.endswith("answer") else "")
                    if seen not in done:
                        done.add(seen)
                        cases.append(VerifierCase(f"{key}-{kind}", kind, label, question, title, passage, claim, f"squad:{article_part}"))
    return cases


def _rationale_passage(abstract: str, sentences: Iterable[int]) -> str:
    """The cited abstract around its rationale sentences (one sentence either side): a chunk that
    fits the judge's 256 tokens, where the whole abstract often would not."""
    spans = _sentences(abstract)
    wanted = sorted({j for i in sentences for j in (i - 1, i, i + 1) if 0 <= j < len(spans)})
    if not wanted:
        return abstract
    return " ".join(abstract[spans[j][0] : spans[j][1]].strip() for j in range(wanted[0], wanted[-1] + 1))


def scifact_part(claim_id: int) -> str:
    """Odd claim ids are the test part; of the even ones, ids divisible by 4 are for training a
    judge (`rag train-verifier --scifact`), the others the design part thresholds are chosen on."""
    return "test" if claim_id % 2 else "train" if claim_id % 4 == 0 else "design"


def scifact_cases(folder: str | Path) -> list[VerifierCase]:
    folder = Path(folder)
    queries, corpus = folder / "queries.jsonl", folder / "corpus.jsonl"
    if not queries.is_file() or not corpus.is_file():
        raise InvalidInput(f"no BEIR SciFact folder at {folder} (queries.jsonl and corpus.jsonl)")
    claims = [json.loads(line) for line in read_utf8(queries).splitlines() if line.strip()]
    cited = {d for q in claims for d in (q.get("metadata") or {})}
    docs = {}
    for line in read_utf8(corpus).splitlines():
        if line.strip():
            doc = json.loads(line)
            if doc["_id"] in cited:
                docs[doc["_id"]] = doc
    cases: list[VerifierCase] = []
    pool = sorted(docs)
    for q in claims:
        evidence = q.get("metadata") or {}
        if not evidence:
            continue
        part = scifact_part(int(q["_id"]))
        claim = q["text"].strip()
        for doc_id, items in sorted(evidence.items()):
            if doc_id not in docs:
                continue
            label = items[0]["label"]
            passage = _rationale_passage(docs[doc_id]["text"], [s for item in items for s in item.get("sentences", [])])
            kind = "scifact-support" if label == "SUPPORT" else "scifact-contradict"
            title = docs[doc_id]["title"]
            cases.append(VerifierCase(f"scifact-{part}-{q['_id']}-{doc_id}", kind, label == "SUPPORT", "", title, passage, claim, f"scifact:{part}"))
        rng = random.Random(_stable("scifact-" + q["_id"]))
        other = rng.choice([d for d in pool if d not in evidence])
        doc = docs[other]
        passage = _rationale_passage(doc["text"], [0, 1])
        cases.append(VerifierCase(f"scifact-{part}-{q['_id']}-other", "scifact-other", False, "", doc["title"], passage, claim, f"scifact:{part}"))
    return cases


def written_cases(path: str | Path) -> list[VerifierCase]:
    out = []
    for case in read_cases(path):
        part = "design" if _stable(case.id) % 2 == 0 else "test"
        out.append(VerifierCase(case.id, case.kind, case.label, case.question, case.title, case.passage, case.answer, f"written:{part}"))
    return out


def part_of(case: VerifierCase) -> str:
    return case.source.rsplit(":", 1)[-1]


def sample(cases: Sequence[VerifierCase], per_kind: int | None) -> list[VerifierCase]:
    """At most `per_kind` cases of each (source, part, kind), chosen by a hash of the id (stable)."""
    if per_kind is None:
        return list(cases)
    groups: dict[tuple[str, str], list[VerifierCase]] = {}
    for c in cases:
        groups.setdefault((c.source, c.kind), []).append(c)
    kept = {c.id for group in groups.values() for c in sorted(group, key=lambda c: _stable(c.id))[:per_kind]}
    return [c for c in cases if c.id in kept]


def build_set(
    data: str | Path, sources: Sequence[str], part: Part = "all", per_kind: int | None = None, written: str | Path | None = None
) -> list[VerifierCase]:
    """The labelled pairs of `sources` (squad, scifact, written) from the shared data folder `data`
    (holding `squad/squad-v1.1-dev-articles-01-24.json` and `beir/scifact/`), the part asked for."""
    data = Path(data)
    cases: list[VerifierCase] = []
    for source in sources:
        if source == "squad":
            squad = data / "squad" / "squad-v1.1-dev-articles-01-24.json"
            if not squad.is_file():
                raise InvalidInput(f"no SQuAD dev articles at {squad} (give --data, the shared data folder)")
            cases.extend(squad_cases(squad))
        elif source == "scifact":
            cases.extend(scifact_cases(data / "beir" / "scifact"))
        elif source == "written":
            cases.extend(written_cases(written or Path("examples") / "verification-written.jsonl"))
        else:
            raise InvalidInput(f"unknown verification source {source!r}: use {', '.join(SOURCES)}")
    if part != "all":
        cases = [c for c in cases if part_of(c) == part]
    return sample(cases, per_kind)
