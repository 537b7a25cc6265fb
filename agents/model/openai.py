"""OpenAI-compatible chat-completions client over aiohttp (vLLM, Ollama, OpenAI, LiteLLM).

    model = OpenAICompatibleModel("http://localhost:50099/v1", "gpt-4o-mini", api_key=None)
    turn = await model.complete(ChatRequest(messages, tools), timeout=30)

Retries (tenacity) on 429, 5xx, timeouts and connection errors, honouring
`Retry-After`, never on other 4xx; every attempt and every wait fits in the
caller's `timeout`. After the last attempt the failure is `ModelUnavailable`
(the runner ends the task with STOP_REASON_MODEL_ERROR); a 4xx is
`ModelRejected`; an answer that cannot be understood is `MalformedResponse`.

aiohttp rather than httpx (DESIGN.md's first idea): the same call costs about
0.8 ms less CPU per request here (C-accelerated HTTP parsing), which is most
of the agent's per-step budget (docs/decisions.md, "Agent runtime").
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from agentmesh.kit.retry import Backoff
from agents.model.types import ChatRequest, MalformedResponse, ModelRejected, ModelTurn, ModelUnavailable
from agents.model.wire import SCRIPTED_HEADER, parse_response, request_body

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
# A Retry-After longer than this is not worth waiting for inside one task step.
MAX_RETRY_AFTER_S = 30.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class _Retryable(Exception):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_BACKOFF = Backoff(initial_s=INITIAL_BACKOFF_S, max_s=MAX_BACKOFF_S)


def _wait(retry_state: RetryCallState) -> float:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    after = exc.retry_after if isinstance(exc, _Retryable) else None
    return _BACKOFF.delay(
        retry_state.attempt_number, retry_after=None if after is None else min(after, MAX_RETRY_AFTER_S)
    )


class OpenAICompatibleModel:
    """A `ChatModel` speaking POST {base_url}/chat/completions."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_retries: int = 3,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("a model base URL is required (MODEL_BASE_URL)")
        if not model:
            raise ValueError("a model name is required (MODEL_NAME or the spec's model.name)")
        self.base_url = base_url.rstrip("/")
        self._model = model
        self._api_key = api_key
        self._max_retries = max(1, max_retries)
        self._session = session
        self._owns_session = session is None

    @property
    def model_name(self) -> str:
        return self._model

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that will use it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                trust_env=False,
                json_serialize=_dumps,
            )
        return self._session

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        deadline = time.monotonic() + max(0.0, timeout)
        body = _dumps(request_body(self._model, request)).encode()
        headers = {"content-type": "application/json", **dict(request.headers)}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"

        def out_of_time(retry_state: RetryCallState) -> bool:
            if retry_state.attempt_number >= self._max_retries:
                return True
            return time.monotonic() + (retry_state.upcoming_sleep or 0.0) >= deadline - 0.01

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable), wait=_wait, stop=out_of_time, reraise=True
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(body, headers, request, deadline)
        except _Retryable as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise ModelUnavailable(
                f"model at {self.base_url} unavailable after {attempts} attempt(s): {exc.message}",
                status=exc.status,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, body: bytes, headers: dict[str, str], request: ChatRequest, deadline: float
    ) -> ModelTurn:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Retryable("deadline reached before the call")
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._client().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=remaining, connect=min(remaining, 5.0)),
            ) as response:
                status = response.status
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                retry_after = response.headers.get("retry-after")
                scripted = bool(response.headers.get(SCRIPTED_HEADER))
        except TimeoutError:
            raise _Retryable(f"no answer within {remaining:.1f}s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        if status == 429 or status >= 500:
            raise _Retryable(
                f"HTTP {status}: {_error_text(raw)}",
                status=status,
                retry_after=parse_retry_after(retry_after),
            )
        if status >= 400:
            raise ModelRejected(f"HTTP {status}: {_error_text(raw)}", status=status)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise MalformedResponse(f"response is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MalformedResponse(f"response is not JSON: {raw[:120]!r}") from None
        return parse_response(
            payload, request_messages=request.messages, fallback_model=self._model, scripted=scripted
        )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_text(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw[:200].decode(errors="replace") or "no body"
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message") or payload["error"])[:200]
    return str(payload)[:200]
