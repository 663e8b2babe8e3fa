"""Request/response validation against the official DigitalOcean OpenAPI document.

The document (shared/specs/digitalocean-openapi.yaml, OpenAPI 3.0.0, ~3 MB) is never
edited.  The validator itself (routing, parameter casting, OAS 3.0 read/write schema
semantics, the JSON parse cache) lives in ../openapi_check.py, shared with the other API
fakes; this module only says where the DO document is and what is special about it.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import openapi_check  # noqa: E402  (exits with a message naming fake-deps if deps are missing)
from openapi_check import MISSING_DEPS_MSG, ValidationResult, find_spec  # noqa: E402,F401

# Places where the official document is wrong or unusable as-is, and what we do about
# it at run time (the file itself is never modified).
SPEC_WORKAROUNDS = [
    "components.parameters.ssh_key_identifier: the path parameter schema is anyOf of "
    "ssh_key_id/ssh_key_fingerprint, both `readOnly: true`; a write-mode validator "
    "(e.g. openapi-core) rejects every id or fingerprint. Parameters are validated "
    "with the plain OAS 3.0 validator, which ignores readOnly.",
]


def default_spec_path() -> str:
    return find_spec("digitalocean-openapi.yaml", "SFUCTL_DO_OPENAPI")


def load_spec(path: str, use_cache: bool = True) -> tuple[dict, dict]:
    return openapi_check.load_spec(path, use_cache, cache_prefix="do-openapi")


class OpenAPIValidator(openapi_check.OpenAPIValidator):
    def __init__(self, spec_path: str | None = None, use_cache: bool = True):
        super().__init__(spec_path or default_spec_path(), use_cache,
                         cache_prefix="do-openapi", env_var="SFUCTL_DO_OPENAPI")
