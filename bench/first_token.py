"""Time to a generative answer's first token after retrieval, in one warm process (the generator
loads once per process), demo corpus, defaults, against the previous release's generation run in
the same script:

    python bench/first_token.py                 # 5 questions x 3 rounds
    python bench/first_token.py --rounds 5

now: `AskPipeline.stream` at the defaults: the reader (and the judge's check of its span) then the
first streamed token; its guided prompt holds only the sentences with the reader's spans, the chat
head (rules, worked example) is restored from a saved llama.cpp state, and the weights are the Q8_0
copy. previous: the same questions, passages and reader spans, the prompt the last release built
(whole passages, no saved head) on the packaged Q4_1 weights; its first token is timed the same way
(streamed), so "after retrieval" = the reader's time + that. Both sides also print the prompt tokens
llama.cpp evaluated (from its /metrics counters). Rounds alternate the two sides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = (
    "Where was Pierre Curie born?",
    "When did Marie Curie win her second Nobel Prize?",
    "What does FAISS stand for?",
    "Who discovered polonium?",
    "Where was Marie Curie born?",
)


def _evaluated(generator: object) -> int:
    for line in str(generator.server.handle_metrics()).splitlines():  # type: ignore[attr-defined]
        if line.startswith("llamacpp:prompt_tokens_total"):
            return int(float(line.split()[-1]))
    return -1


def _previous_turn(sources: str, question: str, hints: list) -> str:
    marked = "; ".join(f'"{" ".join(text.split())}" in [{n}]' for n, text in hints)
    return (
        f"Question: {question}\n\n{sources}\n\nCandidate answers found in the sources: {marked}.\n"
        f"Question: {question}\nReply with one or two sentences that state the answer, each followed by [n] where n is the source number."
    )


def _previous_messages(question: str, passages: list, hints: list) -> list[dict[str, str]]:
    """The guided prompt of the previous release: whole passages (2,000 characters at most), the
    question before and after them, a reply line."""
    from rag import prompt

    system = prompt.SYSTEM.rsplit("\n", 1)[0] + "\n" + prompt.GUIDED_RULE
    example_sources = [(n, title, text) for n, (title, text) in enumerate(prompt.EXAMPLE_SOURCES, start=1)]
    example = _previous_turn(prompt._block(example_sources), prompt.EXAMPLE_QUESTION, list(prompt.EXAMPLE_HINTS))
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": example},
        {"role": "assistant", "content": prompt.EXAMPLE_ANSWER},
        {"role": "user", "content": _previous_turn(prompt.format_sources(passages), question, hints)},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from indexes.encoder import cpu_summary
    from rag.generation.llamacpp import LlamaCppGenerator
    from rag.guided import reader_hints
    from rag.qa import ANSWER_STOP, suspicious_passages
    from rag.runtime import Runtime
    from rag.settings import load_settings

    home = Path(tempfile.mkdtemp(prefix="rag-bench-first-token-"))
    rt = Runtime(load_settings(home=home))
    rt.ingestor(rt.writable_collection("demo")).ingest_paths([str(REPO / "examples" / "corpus")])
    pipeline = rt.ask_pipeline()
    pipeline.ask(QUESTIONS[0], "demo", "generative")  # loads every model, saves the chat head
    previous = LlamaCppGenerator(threads=rt.settings.threads, context_tokens=rt.settings.generator_context_tokens, reuse_head=False)
    retriever = pipeline._retriever("demo", None)
    now_ms: list[float] = []
    before_ms: list[float] = []
    now_tokens: list[int] = []
    before_tokens: list[int] = []
    for round_ in range(args.rounds):
        for question in QUESTIONS:
            sides = ("now", "previous") if round_ % 2 == 0 else ("previous", "now")
            for side in sides:
                if side == "now":
                    counted = _evaluated(pipeline.generator)
                    *_, answer = list(pipeline.stream(question, "demo", "generative"))
                    t = answer.timings  # type: ignore[union-attr]
                    if "first_token_ms" in t:
                        now_ms.append(t["guide_ms"] + t["first_token_ms"])
                        now_tokens.append(_evaluated(pipeline.generator) - counted)
                else:
                    passages = retriever.retrieve(question, 5)
                    started = time.perf_counter()
                    guide = pipeline._guide().answer(question, passages, suspicious_passages(passages))  # type: ignore[union-attr]
                    hints = reader_hints(guide)
                    if not hints:
                        continue
                    counted = _evaluated(previous)
                    stream = previous.stream(_previous_messages(question, passages, hints), 96, stop=ANSWER_STOP)
                    next(stream)
                    before_ms.append((time.perf_counter() - started) * 1000)
                    stream.close()
                    before_tokens.append(_evaluated(previous) - counted)
    print(cpu_summary())
    print(f"load average {os.getloadavg()[0]:.2f}; {len(now_ms)} + {len(before_ms)} answers; medians")
    print("| generation | prompt tokens evaluated | first token after retrieval (ms) |")
    print("| --- | --- | --- |")
    print(f"| previous (whole passages, Q4_1, no saved head) | {statistics.median(before_tokens):.0f} | {statistics.median(before_ms):.0f} |")
    print(f"| now (defaults) | {statistics.median(now_tokens):.0f} | {statistics.median(now_ms):.0f} |")
    print(f"ratio previous / now: x{statistics.median(before_ms) / statistics.median(now_ms):.2f}")


if __name__ == "__main__":
    main()
