"""gatekeeper: pure-ASGI middleware that stops stolen and resold API keys.

    from gatekeeper import Gatekeeper
    app = Gatekeeper(app, "policy.yaml")
"""

from gatekeeper.audit import AuditLog
from gatekeeper.audit_stream import RedisAuditStream
from gatekeeper.auth import Authenticator
from gatekeeper.client_address import ClientAddressPolicy, resolve_client
from gatekeeper.clock import Clock, ManualClock, SystemClock
from gatekeeper.compiled import interpreted
from gatekeeper.credentials import Credential
from gatekeeper.decision import ACTIONS, ALLOW, BLOCK, FLAG, SUSPEND, THROTTLE, Decision, decide
from gatekeeper.errors import (
    ConfigError,
    GatekeeperError,
    KeyConflictError,
    KeyExistsError,
    KeyNotFoundError,
    KeyRevokedError,
    PolicyError,
    StoreError,
    StoreNotFoundError,
)
from gatekeeper.facts import FactReader, RequestFacts
from gatekeeper.github_keys import GITHUB_KEYS_URL, SigningKeys
from gatekeeper.jwt_verifier import JwtVerifier
from gatekeeper.keys import (
    KEY_PATTERN,
    KeyRecord,
    build_key,
    hash_secret,
    key_pattern,
    new_key,
    parse_key,
)
from gatekeeper.metrics import Metrics
from gatekeeper.middleware import SCOPE_KEY, Gatekeeper
from gatekeeper.networks import IPAddr, NetworkSet, parse_ip
from gatekeeper.policy.keys import load_pepper
from gatekeeper.policy.load import compile_policy, load_policy
from gatekeeper.policy.model import Policy, TenantPolicy
from gatekeeper.principal import CredentialKind, KeyStatus, Principal
from gatekeeper.reasons import OK, REFUSALS, Reason, Refusal
from gatekeeper.replay import RequestRecord, read_records, replay
from gatekeeper.runtime import Runtime
from gatekeeper.secret_scanning import SecretScanning
from gatekeeper.store import MemoryStore, SQLiteStore, Store, store_from_url
from gatekeeper.store.locations import LocationStore, MemoryLocationStore
from gatekeeper.webhook_signature import sign_webhook, verify_webhook
from gatekeeper.webhooks import Notifier

__version__ = "0.1.0"
COMPILED: bool = not interpreted()
"""The request path runs compiled (``gatekeeper/compiled.py``): False in a pure install."""

__all__ = [
    "ACTIONS",
    "ALLOW",
    "BLOCK",
    "COMPILED",
    "FLAG",
    "GITHUB_KEYS_URL",
    "KEY_PATTERN",
    "OK",
    "REFUSALS",
    "SCOPE_KEY",
    "SUSPEND",
    "THROTTLE",
    "AuditLog",
    "Authenticator",
    "ClientAddressPolicy",
    "Clock",
    "ConfigError",
    "Credential",
    "CredentialKind",
    "Decision",
    "FactReader",
    "Gatekeeper",
    "GatekeeperError",
    "IPAddr",
    "JwtVerifier",
    "KeyConflictError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyRecord",
    "KeyRevokedError",
    "KeyStatus",
    "LocationStore",
    "ManualClock",
    "MemoryLocationStore",
    "MemoryStore",
    "Metrics",
    "NetworkSet",
    "Notifier",
    "Policy",
    "PolicyError",
    "Principal",
    "Reason",
    "RedisAuditStream",
    "Refusal",
    "RequestFacts",
    "RequestRecord",
    "Runtime",
    "SQLiteStore",
    "SecretScanning",
    "SigningKeys",
    "Store",
    "StoreError",
    "StoreNotFoundError",
    "SystemClock",
    "TenantPolicy",
    "build_key",
    "compile_policy",
    "decide",
    "hash_secret",
    "key_pattern",
    "load_pepper",
    "load_policy",
    "new_key",
    "parse_ip",
    "parse_key",
    "read_records",
    "replay",
    "resolve_client",
    "sign_webhook",
    "store_from_url",
    "verify_webhook",
]
