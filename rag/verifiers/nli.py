"""The cross-encoder verifier: a (claim, passage) -> supported classifier, such as HHEM-2.1-open
or MiniCheck where they can be downloaded; offline, `shared/models/verifier-minilm-l6-support`
(MiniLM-L6 trained on synthetic SQuAD pairs, fp16 weights loaded as float32).

Such models do not see who did what to whom (the shared model accepts "Pierre Curie was born in
Warsaw" from a passage where Marie was), so by default a positive verdict must also pass the
shared guards on the passage sentence that overlaps the claim most: its names, negation, numbers
and name order.
"""

from __future__ import annotations

from collections.abc import Sequence

from indexes.encoder import resolve_model_path
from indexes.errors import MissingDependency, ModelLoadError
from indexes.types import Passage
from rag.verifiers.base import Claim, Evidence, Source, conflicts, missing_names

SUPPORTED_LABEL = 1


class NLIVerifier:
    def __init__(
        self, model: str, *, threshold: float = 0.5, guards: bool = True, device: str = "cpu", max_tokens: int = 256, batch: int = 32
    ) -> None:
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
        self.guards = guards
        self.max_tokens = max_tokens
        self.batch = batch
        self.name = "nli" if guards else "nli-unguarded"
        self.note = ""

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(supported) for (claim, passage) pairs."""
        torch = self._torch
        out: list[float] = []
        for i in range(0, len(pairs), self.batch):
            part = pairs[i : i + self.batch]
            enc = self.tokenizer(
                [c for c, _ in part], [p for _, p in part], truncation="only_second", max_length=self.max_tokens,
                padding=True, return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            out.extend(torch.softmax(logits, dim=-1)[:, SUPPORTED_LABEL].tolist())
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
