"""Gatekeeper in front of a Starlette app: wrap the app, serve with uvicorn.

    export GATEKEEPER_PEPPER=$(gatekeeper pepper)
    gatekeeper keys --policy examples/policy.yaml create --tenant acme
    uvicorn examples.starlette_app:app --no-proxy-headers --log-config examples/logging.yaml

``--no-proxy-headers`` leaves the client address to gatekeeper's ``trusted_proxies``; uvicorn's
own proxy handling would otherwise rewrite it from X-Forwarded-For before gatekeeper looks.
The policy is ``$GATEKEEPER_POLICY`` (the CLI reads it too), else ``policy.yaml`` beside this
file; its store, ``sqlite:///gatekeeper-keys.db``, is a file beside the policy.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount, Route

from gatekeeper import Gatekeeper, Metrics
from gatekeeper.demo.upstream import create_upstream

POLICY = os.environ.get("GATEKEEPER_POLICY") or Path(__file__).with_name("policy.yaml")

metrics = Metrics()
upstream = create_upstream()  # the mock OpenAI-compatible endpoint the demo serves
app = Gatekeeper(
    Starlette(routes=[Route("/metrics", metrics.asgi_app()), Mount("/", upstream)]),
    POLICY,
    metrics=metrics,
)
