"""The ``keys`` section: how long a verified key is trusted, where the pepper comes from, and
the prefix keys carry (a deployment registers its own with GitHub's secret scanning)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from gatekeeper.errors import ConfigError
from gatekeeper.keys import MIN_PEPPER_BYTES, PREFIX, prefix_problem
from gatekeeper.policy.fields import Fields
from gatekeeper.policy.model import DEFAULT_PEPPER_ENV, KeyPolicy

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_keys(fields: Fields) -> KeyPolicy:
    ttl = fields.number("cache_ttl", 1.0, 0.0, 60.0)
    env = fields.get("pepper_env", str, DEFAULT_PEPPER_ENV)
    if not _ENV_NAME.fullmatch(env):
        fields.error("pepper_env", env, "is not an environment variable name")
    pepper_file = fields.get("pepper_file", str, None)
    prefix = fields.get("prefix", str, PREFIX)
    problem = prefix_problem(prefix)
    if problem is not None:
        fields.error("prefix", prefix, problem)
        prefix = PREFIX
    accepted: list[str] = []
    for i, earlier in enumerate(fields.str_list("accepted_prefixes")):
        problem = prefix_problem(earlier)
        if problem is not None:
            fields.error(f"accepted_prefixes[{i}]", earlier, problem)
        elif earlier != prefix and earlier not in accepted:
            accepted.append(earlier)
    fields.finish()
    return KeyPolicy(ttl, env, pepper_file, prefix, tuple(accepted))


def load_pepper(keys: KeyPolicy, environ: Mapping[str, str] | None = None) -> bytes:
    """The server-side secret mixed into every key hash. It never goes in the store."""
    env = os.environ if environ is None else environ
    if keys.pepper_file is not None:
        try:
            value = Path(keys.pepper_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("keys.pepper_file", keys.pepper_file,
                              f"cannot be read: {type(exc).__name__}") from exc
        field = "keys.pepper_file"
    else:
        value = env.get(keys.pepper_env, "").strip()
        field = "keys.pepper_env"
        if not value:
            # the name is shown only when it is the default: a name the policy gives may be
            # a secret pasted in the wrong place
            unset = (f"${DEFAULT_PEPPER_ENV} is not set" if keys.pepper_env == DEFAULT_PEPPER_ENV
                     else "names an environment variable that is not set")
            raise ConfigError(field, keys.pepper_env,
                              f"{unset} (generate a pepper with `gatekeeper pepper`)")
    if len(value.encode()) < MIN_PEPPER_BYTES:
        # the value is a secret: say how long it is, never what it is
        raise ConfigError(field, keys.pepper_file or keys.pepper_env,
                          f"holds a pepper of {len(value.encode())} bytes; at least "
                          f"{MIN_PEPPER_BYTES} are required")
    return value.encode()
