"""A small OpenAI-compatible endpoint to put behind gatekeeper: models, chat completions (plain
and ``stream: true``), with ``usage``. It counts what reaches it, so tests can prove that
refused requests never did.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ("gpt-4o-mini", "gpt-4o", "demo-echo")


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error",
                                   "param": param, "code": None}}, status_code=status)


async def models(request: Request) -> Response:
    request.app.state.seen.append(("GET", "/v1/models"))
    return JSONResponse({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "demo"}
        for m in MODELS]})


async def chat_completions(request: Request) -> Response:
    request.app.state.seen.append(("POST", "/v1/chat/completions"))
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.")
    model = body.get("model")
    messages = body.get("messages")
    if model not in MODELS:
        return _error(404, f"The model {model!r} does not exist.", "model")
    if not isinstance(messages, list) or not messages:
        return _error(400, "'messages' must be a non-empty list.", "messages")
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    tenant = getattr(request.scope.get("gatekeeper"), "tenant", None)
    reply = f"Hello {tenant or 'there'}! You said: {prompt[:200]}"
    usage = {"prompt_tokens": max(1, len(prompt.split())),
             "completion_tokens": len(reply.split()),
             "total_tokens": max(1, len(prompt.split())) + len(reply.split())}
    ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(ident, created, model, reply, usage, include_usage),
                                 media_type="text/event-stream")
    return JSONResponse({
        "id": ident, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": reply}}],
        "usage": usage})


async def _stream(ident: str, created: int, model: str, reply: str, usage: dict[str, int],
                  include_usage: bool) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""}, None)
    for word in reply.split(" "):
        yield chunk({"content": word + " "}, None)
    yield chunk({}, "stop")
    if include_usage:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [], "usage": usage}
        yield f"data: {json.dumps(data)}\n\n".encode()
    yield b"data: [DONE]\n\n"


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def create_upstream() -> Starlette:
    app = Starlette(routes=[
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/healthz", healthz),
    ])
    app.state.seen = []
    return app
