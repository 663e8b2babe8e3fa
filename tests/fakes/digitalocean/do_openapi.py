"""Request/response validation against the official DigitalOcean OpenAPI document.

The document (shared/specs/digitalocean-openapi.yaml, OpenAPI 3.0.0, ~3 MB) is never
edited. It is parsed once per process; the parsed form is cached as JSON keyed by the
SHA-256 of the YAML bytes, so a second process loads it in ~0.1 s instead of ~2 s.

Routing, parameter and body validation live in ../openapi_check.py, shared by every
cloud fake (OAS 3.0 semantics from `openapi-schema-validator`: request bodies with the
write validator, responses with the read validator, parameters with the plain one).
This module only finds DigitalOcean's document and names what is wrong in it:
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import openapi_check  # noqa: E402  (exits with a clear message if deps are missing)
from openapi_check import Operation, ValidationResult  # noqa: E402,F401  (re-exported)

# Places where the official document is wrong or unusable as-is, and what we do about
# it at run time (the file itself is never modified).
SPEC_WORKAROUNDS = [
    "components.parameters.ssh_key_identifier: the path parameter schema is anyOf of "
    "ssh_key_id/ssh_key_fingerprint, both `readOnly: true`; a write-mode validator "
    "(e.g. openapi-core) rejects every id or fingerprint. Parameters are validated "
    "with the plain OAS 3.0 validator, which ignores readOnly.",
]


def default_spec_path() -> str:
    """$SFUCTL_DO_OPENAPI, else shared/specs/digitalocean-openapi.yaml beside the repo."""
    return openapi_check.find_spec("digitalocean-openapi.yaml", "SFUCTL_DO_OPENAPI")


class OpenAPIValidator(openapi_check.OpenAPIValidator):
    """The shared validator over DigitalOcean's document."""

    def __init__(self, spec_path: str | None = None, use_cache: bool = True):
        self.spec_path = spec_path or default_spec_path()
        if not os.path.exists(self.spec_path):
            raise SystemExit(
                f"OpenAPI document not found: {self.spec_path} (set --spec or "
                "SFUCTL_DO_OPENAPI)"
            )
        doc, info = openapi_check.load_document(self.spec_path, use_cache, cache_prefix="do-openapi")
        super().__init__(doc, info)
