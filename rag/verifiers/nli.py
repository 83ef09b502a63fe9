"""The cross-encoder verifier: a (claim, passage) -> supported classifier, such as HHEM-2.1-open
or MiniCheck where they can be downloaded; by default the shipped `verifier-minilm-l6-support-v2`
(MiniLM-L6 trained on synthetic SQuAD pairs; an ONNX export with int8 weights, `rag.shipped`).

This class loads the model and scores pairs (`probabilities`); the verdict (threshold, guards)
is `rag.verifiers.judge`, whose calibration file says which threshold and guards pay on labelled
pairs the choice did not see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from indexes.errors import ModelLoadError
from indexes.types import Passage
from rag.shipped import VERIFIER
from rag.verifiers.base import Evidence
from rag.verifiers.judge import Judgement, judge, parse_guards

SUPPORTED_LABEL = 1


class NLIVerifier:
    def __init__(
        self,
        model: str = VERIFIER,
        *,
        threshold: float = 0.5,
        guards: bool | str | Sequence[str] = True,
        device: str = "cpu",
        max_tokens: int = 256,
        batch: int = 32,
        runtime: str = "auto",
        threads: int | None = None,
    ) -> None:
        """`model`: the shipped export (default), an exported folder (ONNX Runtime) or an HF
        folder / hub id (torch); `runtime` as `rag.heads.load_head`. `guards`: True (all), False (none)
        or the names to apply (`rag.verifiers.judge.GUARDS`)."""
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
        self.guards = parse_guards(guards)
        self.max_tokens = max_tokens
        self.batch = batch
        self.name = "nli" if self.guards else "nli-unguarded"
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

    def judgements(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Judgement]]:
        """Each pair's verdict with its probability and the guards that fire (for evaluation)."""
        return judge(self.probabilities, question, claims, passages, self.threshold, self.guards)

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]:
        return [[j.evidence for j in row] for row in self.judgements(question, claims, passages)]
