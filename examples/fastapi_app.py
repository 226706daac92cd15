"""Gatekeeper in a FastAPI app, added as ASGI middleware; routes read the verified tenant.

    export GATEKEEPER_PEPPER=$(gatekeeper pepper)
    gatekeeper keys --policy examples/policy.yaml create --tenant acme
    uvicorn examples.fastapi_app:app --no-proxy-headers --log-config examples/logging.yaml

The policy is ``$GATEKEEPER_POLICY``, else ``policy.yaml`` beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from gatekeeper import SCOPE_KEY, Decision, Gatekeeper

app = FastAPI()
app.add_middleware(Gatekeeper, policy=os.environ.get("GATEKEEPER_POLICY")
                   or Path(__file__).with_name("policy.yaml"))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, Any]:
    decision: Decision = request.scope[SCOPE_KEY]  # set by gatekeeper on every allowed request
    body = await request.json()
    return {"object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant",
                                     "content": f"hello {decision.tenant}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
