"""Any OpenAI-compatible chat server (vLLM, llama.cpp's server, Ollama, OpenAI) over httpx.

Only connection failures are retried (with exponential backoff): a request the server received
may have started generating, and an HTTP error status is an answer, not a transient fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from rag.generation.base import GenerationError, Message

_RETRIED = (httpx.ConnectError, httpx.ConnectTimeout)


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        *,
        model: str = "default",
        api_key: str | None = None,
        timeout_s: float = 120.0,
        temperature: float = 0.0,
        max_tokens: int = 256,
        attempts: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.attempts = attempts
        self.name = f"openai:{self.model}@{self.base_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        )

    def _payload(self, messages: Sequence[Message], max_tokens: int | None, stop: Sequence[str] | None, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if stop:
            payload["stop"] = list(stop)
        return payload

    def _retrying(self) -> Any:
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        return Retrying(
            retry=retry_if_exception_type(_RETRIED),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            reraise=True,
        )

    def generate(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> str:
        payload = self._payload(messages, max_tokens, stop, stream=False)
        try:
            for attempt in self._retrying():
                with attempt:
                    response = self._client.post("/chat/completions", json=payload)
        except httpx.HTTPError as exc:
            raise GenerationError(f"cannot reach the generator at {self.base_url}: {exc}") from exc
        _raise_for_status(response, self.base_url)
        try:
            return str(response.json()["choices"][0]["message"].get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise GenerationError(f"{self.base_url} answered something that is not a chat completion") from exc

    def stream(self, messages: Sequence[Message], max_tokens: int | None = None, stop: Sequence[str] | None = None) -> Iterator[str]:
        """Text pieces from the server's server-sent events, up to `data: [DONE]`."""
        payload = self._payload(messages, max_tokens, stop, stream=True)
        try:
            for attempt in self._retrying():
                with attempt:
                    request = self._client.build_request("POST", "/chat/completions", json=payload)
                    response = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise GenerationError(f"cannot reach the generator at {self.base_url}: {exc}") from exc
        try:
            if response.status_code >= 400:
                response.read()
                _raise_for_status(response, self.base_url)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names, keep-alives
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError as exc:
                    raise GenerationError(f"{self.base_url} sent an event that is not JSON: {data[:200]}") from exc
                if "error" in event:
                    raise GenerationError(f"{self.base_url}: {event['error']}")
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        except httpx.HTTPError as exc:
            raise GenerationError(f"the stream from {self.base_url} broke: {exc}") from exc
        finally:
            response.close()

    def close(self) -> None:
        self._client.close()


def _raise_for_status(response: httpx.Response, base_url: str) -> None:
    if response.status_code < 400:
        return
    try:
        detail: Any = response.json().get("error", response.text)
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
    except ValueError:
        detail = response.text
    raise GenerationError(f"{base_url} answered HTTP {response.status_code}: {str(detail)[:300]}")
