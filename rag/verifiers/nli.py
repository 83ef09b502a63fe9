"""The cross-encoder verifier: a (claim, passage) -> supported classifier, such as HHEM-2.1-open
or MiniCheck where they can be downloaded; by default the shipped `verifier-minilm-l6-support`
(MiniLM-L6 trained on synthetic SQuAD pairs; an ONNX export with int8 weights, `rag.shipped`).

Such models do not see who did what to whom (the shared model accepts "Pierre Curie was born in
Warsaw" from a passage where Marie was), so by default a positive verdict must also pass the
shared guards on the passage sentence that overlaps the claim most: its names, negation, numbers
and name order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexes.errors import ModelLoadError
from indexes.types import Passage
from rag.shipped import VERIFIER
from rag.verifiers.base import Claim, Evidence, Source, conflicts, missing_names

SUPPORTED_LABEL = 1


class NLIVerifier:
    def __init__(
        self,
        model: str = VERIFIER,
        *,
        threshold: float = 0.5,
        guards: bool = True,
        device: str = "cpu",
        max_tokens: int = 256,
        batch: int = 32,
        runtime: str = "auto",
        threads: int | None = None,
    ) -> None:
        """`model`: the shipped export (default), an exported folder (ONNX Runtime) or an HF
        folder / hub id (torch); `runtime` as `rag.heads.load_head`."""
        from rag.heads import load_head

        try:
            self.model = load_head(model, "text-classification", runtime, device=device, threads=threads)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"cannot load verifier model {model!r} ({str(exc)[:300]}): set RAG_VERIFIER_MODEL to a local folder "
                f"of a (claim, passage) classifier, or leave it unset for the shipped {VERIFIER}"
            ) from exc
        self.device = device
        self.threshold = threshold
        self.guards = guards
        self.max_tokens = max_tokens
        self.batch = batch
        self.name = "nli" if guards else "nli-unguarded"
        self.note = ""
        # claim first, passage cut to fit (transformers' truncation="only_second"); a claim too long
        # for that is cut with the passage (longest_first) rather than failing
        self._pairs = self.model.tokenizer()
        self._pairs.enable_truncation(max_tokens, strategy="only_second")
        self._long_claims = self.model.tokenizer()
        self._long_claims.enable_truncation(max_tokens, strategy="longest_first")

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(supported) for (claim, passage) pairs; a pair's value does not depend on the others."""
        rows = []
        for claim, passage in pairs:
            try:
                encoding = self._pairs.encode(claim, passage)
            except Exception:  # tokenizers: "second sequence not long enough" for a claim of max_tokens
                encoding = self._long_claims.encode(claim, passage)
            features = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask, "token_type_ids": encoding.type_ids}
            rows.append({name: features[name] for name in self.model.inputs})
        out: list[float] = []
        for (logits,) in self.model.run(rows, batch_tokens=self.batch * self.max_tokens):
            shifted = np.exp(logits.astype(np.float64) - logits.max())
            out.append(float(shifted[SUPPORTED_LABEL] / shifted.sum()))
        return out

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]:
        sources = [Source.of(p) for p in passages]
        parsed = [Claim(c, question) for c in claims]
        # the title leads the passage: "She was born in Warsaw" is about the Marie Curie it names
        pairs = [(c.as_statement(), f"{s.passage.title}. {s.clean_text()}" if s.passage.title else s.clean_text()) for c in parsed for s in sources]
        probs = iter(self.probabilities(pairs)) if pairs else iter(())
        out = []
        for claim in parsed:
            words = claim.words | (Claim(claim.as_statement(), question).words if claim.short else set())
            row = []
            for n, source in enumerate(sources, start=1):
                p = next(probs)
                if not source.windows:
                    row.append(Evidence(n, 0, 0, p))
                    continue
                # the sentence of the passage that says the claim: the one sharing most of its words
                window = max(range(len(source.windows)), key=lambda i: (len(words & source.words[i]), -i))
                start, end = source.windows[window]
                ok = p >= self.threshold
                if ok and self.guards:
                    ok = not missing_names(claim, source, window) and conflicts(claim.text, source.window_text(window), question) is None
                row.append(Evidence(n, start, end, p, ok))
            out.append(row)
        return out
