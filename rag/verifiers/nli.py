"""The cross-encoder verifier: a (claim, passage) -> supported classifier, such as HHEM-2.1-open
or MiniCheck where they can be downloaded; offline, `shared/models/verifier-minilm-l6-support`
(MiniLM-L6 trained on synthetic SQuAD pairs, fp16 weights loaded as float32).

This class loads the model and scores pairs (`probabilities`); the verdict (threshold, guards)
is `rag.verifiers.judge`, whose calibration file says which threshold and guards pay on labelled
pairs the choice did not see.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexes.encoder import resolve_model_path
from indexes.errors import MissingDependency, ModelLoadError
from indexes.types import Passage
from rag.verifiers.base import Evidence
from rag.verifiers.judge import Judgement, judge, parse_guards

SUPPORTED_LABEL = 1


class NLIVerifier:
    def __init__(
        self,
        model: str,
        *,
        threshold: float = 0.5,
        guards: bool | str | Sequence[str] = True,
        device: str = "cpu",
        max_tokens: int = 256,
        batch: int = 32,
    ) -> None:
        """`guards`: True (all), False (none) or the names to apply (`rag.verifiers.judge.GUARDS`)."""
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - install problem
            raise MissingDependency(f"the nli verifier needs torch and transformers: {exc}") from exc
        path = resolve_model_path(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            # weights may be stored in fp16; CPU inference wants float32
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"cannot load verifier model {model!r} ({type(exc).__name__}): set RAG_VERIFIER_MODEL to a local folder "
                "of a (claim, passage) classifier, e.g. shared/models/verifier-minilm-l6-support"
            ) from exc
        self.model.eval().to(device)
        self._torch = torch
        self.device = device
        self.threshold = threshold
        self.guards = parse_guards(guards)
        self.max_tokens = max_tokens
        self.batch = batch
        self.name = "nli" if self.guards else "nli-unguarded"
        self.note = ""

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(supported) for (claim, passage) pairs; a pair over `max_tokens` loses tokens from its
        longer side (a claim longer than the limit would make "only the passage" impossible)."""
        torch = self._torch
        out: list[float] = []
        for i in range(0, len(pairs), self.batch):
            part = pairs[i : i + self.batch]
            enc = self.tokenizer(
                [c for c, _ in part], [p for _, p in part], truncation="longest_first", max_length=self.max_tokens,
                padding=True, return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            out.extend(torch.softmax(logits, dim=-1)[:, SUPPORTED_LABEL].tolist())
        return out

    def judgements(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Judgement]]:
        """Each pair's verdict with its probability and the guards that fire (for evaluation)."""
        return judge(self.probabilities, question, claims, passages, self.threshold, self.guards)

    def verify(self, question: str, claims: Sequence[str], passages: Sequence[Passage]) -> list[list[Evidence]]:
        return [[j.evidence for j in row] for row in self.judgements(question, claims, passages)]
