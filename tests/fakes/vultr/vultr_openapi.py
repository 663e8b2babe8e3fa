"""The Vultr API v2 OpenAPI document, its load-time patches, and the prose-only checks.

The document (shared/specs/vultr-openapi.json, third-party copy of Vultr's published
spec, blob d1ba3b3b) is never edited on disk. shared/specs/README.md lists its defects;
each one is patched here in memory, by a named function that says why (PATCHES). Nothing
else is relaxed: every other schema, parameter and required field stays as published.

Some rules exist only in the document's prose (or in Vultr's behaviour that clients
rely on); `prose_checks()` enforces them on top of the schema, and a failure is treated
exactly like a schema violation (400, logged as a violation).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import sys
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from openapi_check import OpenAPIValidator, find_spec, load_document  # noqa: E402

SPEC_FILE = "vultr-openapi.json"
SPEC_ENV = "SFUCTL_VULTR_OPENAPI"
SPEC_SHA256 = "5bb8489e2d090e321004f07709652fb646a638951729f2cadced35b6492131ca"

# The error body every Vultr error carries (spec intro; tf's apiError struct). The
# document gives none of its 1,665 error responses a body.
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
}

_SCHEMA_SKIP = ("example", "examples", "x-examples", "x-codeSamples", "securitySchemes")
_OAS_TYPES = {"string", "integer", "number", "boolean", "array", "object"}
_TYPE_FIX = {"int": "integer", "float": "number", "bool": "boolean", "double": "number"}


def default_spec_path() -> str:
    return find_spec(SPEC_FILE, SPEC_ENV)


def _ops(doc: dict):
    for template, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch") and isinstance(op, dict):
                yield template, method, op


# ----------------------------------------------------------------------------- patches
# Each returns a short description of what it changed (for /_fake/health and the
# README), or "" when the defect was not found (a newer document may have fixed it).

def patch_dangling_marketplace_app(doc: dict) -> str:
    """`#/components/schemas/marketplace-app` is referenced by GET /marketplace/apps but
    does not exist: Prism refuses to start and openapi-spec-validator crashes. Add a stub
    `{"type":"object"}` (the same one-line relaxation cloud-apis-vultr.md used for Prism)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if "marketplace-app" in schemas:
        return ""
    schemas["marketplace-app"] = {"type": "object"}
    return "added components.schemas.marketplace-app = {type: object}"


def patch_vcr_region_parameter(doc: dict) -> str:
    """`components.parameters.vcr_region` has no `in` (openapi-spec-validator dies with
    KeyError 'in'), and its `name` "VCR Region" does not match the `{region}` it fills
    in /registry/{registry-id}/replication/{region}. Make it `in: path, name: region`."""
    p = doc.get("components", {}).get("parameters", {}).get("vcr_region")
    if p is None or "in" in p:
        return ""
    p["in"] = "path"
    p["name"] = "region"
    p.setdefault("schema", {"type": "string"})
    return "components.parameters.vcr_region: in=path, name=region"


def patch_marketplace_vendor_params(doc: dict) -> str:
    """The POST/PATCH /marketplace/vendor parameters (vendor_name, x_handle, ...) are
    declared `in: path`, but the path has no template variables. Make them `in: query`."""
    item = doc.get("paths", {}).get("/marketplace/vendor", {})
    n = 0
    for method, op in item.items():
        if not isinstance(op, dict):
            continue
        for p in op.get("parameters", []):
            if p.get("in") == "path" and "{" + str(p.get("name")) + "}" not in "/marketplace/vendor":
                p["in"] = "query"
                n += 1
    return f"/marketplace/vendor: {n} parameters in=path -> in=query" if n else ""


def patch_operation_id_spelling(doc: dict) -> str:
    """Three registry operations spell the key `operationID`; rename it to `operationId`
    (the fake dispatches on operation ids)."""
    fixed = []
    for template, method, op in _ops(doc):
        if "operationID" in op and "operationId" not in op:
            op["operationId"] = op.pop("operationID")
            fixed.append(op["operationId"])
    return "operationID -> operationId: " + ", ".join(fixed) if fixed else ""


def patch_duplicate_operation_id(doc: dict) -> str:
    """operationId `get-pushzone` is used twice; the second (GET .../files/{file-name})
    becomes `get-pushzone-file` so ids are unique."""
    item = doc.get("paths", {}).get("/cdns/push-zones/{pushzone-id}/files/{file-name}", {})
    op = item.get("get")
    if not op or op.get("operationId") != "get-pushzone":
        return ""
    op["operationId"] = "get-pushzone-file"
    return "GET /cdns/push-zones/{pushzone-id}/files/{file-name}: operationId get-pushzone-file"


def patch_undeclared_path_params(doc: dict) -> str:
    """Some templated path variables are never declared (/apikeys/{apikey-id},
    PUT /vfs/{vfs_id}): declare them as required string path parameters."""
    fixed = []
    for template, item in doc.get("paths", {}).items():
        names = re.findall(r"\{([^}]+)\}", template)
        common = item.get("parameters", [])
        for method, op in list(item.items()):
            if method == "parameters" or not isinstance(op, dict):
                continue
            declared = set()
            for p in list(common) + list(op.get("parameters", [])):
                if "$ref" in p:
                    cur: Any = doc
                    for part in p["$ref"][2:].split("/"):
                        cur = cur.get(part, {})
                    p = cur
                if p.get("in") == "path":
                    declared.add(p.get("name"))
            for n in names:
                if n not in declared:
                    op.setdefault("parameters", []).append(
                        {"name": n, "in": "path", "required": True,
                         "schema": {"type": "string"}})
                    fixed.append(f"{method.upper()} {template} {{{n}}}")
    return "declared " + ", ".join(fixed) if fixed else ""


def patch_non_oas_types(doc: dict) -> str:
    """`type: int` (the export-id parameter, which also has `schema: null`), `type: enum`
    and the like are not OAS types; jsonschema would raise UnknownType if a request ever
    reached them. int -> integer, float -> number; other unknown types are dropped."""
    fixed = []

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            t = x.get("type")
            if isinstance(t, str) and t not in _OAS_TYPES and "name" in x and "in" in x:
                # a parameter object with a bare `type` (and maybe `schema: null`)
                x["schema"] = {"type": _TYPE_FIX.get(t, "string")}
                del x["type"]
                fixed.append(f"{path} (parameter type {t})")
            elif isinstance(t, str) and t not in _OAS_TYPES:
                if t in _TYPE_FIX:
                    x["type"] = _TYPE_FIX[t]
                else:
                    del x["type"]
                fixed.append(f"{path} (type {t})")
            for k, v in x.items():
                if k not in _SCHEMA_SKIP:
                    walk(v, f"{path}/{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}/{i}")

    walk(doc.get("paths", {}), "#/paths")
    walk(doc.get("components", {}), "#/components")
    return "; ".join(fixed)


def patch_v2_prefixed_paths(doc: dict) -> str:
    """61 paths (IAM, OIDC, organizations) start with `/v2/` although `servers[0].url`
    already ends in `/v2`; taken literally they would be served at /v2/v2/... Strip the
    extra prefix so they sit beside every other path."""
    paths = doc.get("paths", {})
    moved = [p for p in paths if p.startswith("/v2/")]
    for p in moved:
        new = p[3:]
        if new not in paths:
            paths[new] = paths.pop(p)
    return f"{len(moved)} paths /v2/... -> /..." if moved else ""


def patch_error_responses(doc: dict) -> str:
    """No 4xx/5xx response has a body and 429 is declared nowhere, although the intro
    documents both ("All 4xx errors will return a JSON response object with an `error`
    attribute"; 429 past 30 requests/s with Retry-After), and Vultr answers 500 for
    e.g. "Server is currently locked". Give every declared error response the
    {"error","status"} body and declare 400 (some operations, e.g. GET /os, declare no
    error at all, yet a bad cursor is a bad request), 429, 500 and 503 with that body on
    every operation. This only matters to response validation (the self-tests)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["fake-vultr-error"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/fake-vultr-error"}}}
    n_bodies = n_added = 0
    for template, method, op in _ops(doc):
        responses = op.setdefault("responses", {})
        for code, resp in list(responses.items()):
            if code[:1] in ("4", "5") and isinstance(resp, dict) and "$ref" not in resp \
                    and not resp.get("content"):
                resp["content"] = dict(content)
                n_bodies += 1
        for code, desc in (("400", "Bad Request"), ("429", "Too Many Requests"), ("500", "Internal Server Error"),
                           ("503", "Service Unavailable")):
            if code not in responses:
                responses[code] = {"description": desc, "content": dict(content)}
                n_added += 1
    return f"{n_bodies} error responses got the error body; {n_added} 400/429/500/503 declared"


# Values listed only in the descriptions. Protocol is listed upper case there, but the
# examples, Terraform ("they must be lowercase") and the API itself use lower case.
PROSE_ENUMS = {
    ("instance", "instance-get"): {
        "status": ["active", "pending", "suspended", "resizing"],
        "power_status": ["running", "stopped"],
        "server_status": ["none", "locked", "installingbooting", "ok"],
        "user_scheme": ["root", "limited"],
    },
    ("firewall-rule",): {
        "ip_type": ["v4", "v6"],
        "type": ["v4", "v6"],
        "action": ["accept"],
        "protocol": ["icmp", "tcp", "udp", "gre", "esp", "ah"],
    },
}


def patch_prose_enums(doc: dict) -> str:
    """Enums that appear only in prose (instance status/power_status/server_status/
    user_scheme, firewall-rule ip_type/action/protocol) are added to the *response*
    component schemas, so the self-tests catch a fake that drifts from them. Request-side
    prose rules are checked by prose_checks() instead, with Vultr-style messages."""
    schemas = doc.get("components", {}).get("schemas", {})
    done = []
    for names, props in PROSE_ENUMS.items():
        for name in names:
            sch = schemas.get(name, {}).get("properties", {})
            for prop, values in props.items():
                if prop in sch and "enum" not in sch[prop]:
                    sch[prop]["enum"] = list(values)
                    done.append(f"{name}.{prop}")
    return "enum added: " + ", ".join(done) if done else ""


PATCHES: list[Callable[[dict], str]] = [
    patch_dangling_marketplace_app,
    patch_vcr_region_parameter,
    patch_marketplace_vendor_params,
    patch_operation_id_spelling,
    patch_duplicate_operation_id,
    patch_undeclared_path_params,
    patch_non_oas_types,
    patch_v2_prefixed_paths,
    patch_error_responses,
    patch_prose_enums,
]


def apply_patches(doc: dict) -> dict:
    """Applies PATCHES in order; returns {patch name: what it changed}."""
    return {p.__name__: p(doc) for p in PATCHES}


def load_validator(spec_path: str | None = None) -> OpenAPIValidator:
    path = spec_path or default_spec_path()
    if not os.path.exists(path):
        raise SystemExit(f"Vultr OpenAPI document not found: {path} (set --spec or "
                         f"{SPEC_ENV})")
    doc, info = load_document(path, cache_prefix="vultr-openapi")
    info["patches"] = apply_patches(doc)
    info["sha256_matches_readme"] = info["sha256"] == SPEC_SHA256
    return OpenAPIValidator(doc, info)


# ----------------------------------------------------------------------------- prose
IMAGE_SOURCES = ("os_id", "iso_id", "snapshot_id", "app_id", "image_id")
LIST_FILTERS = ("tag", "label", "main_ip", "region", "firewall_group_id", "hostname")
PROTOCOLS = ("icmp", "tcp", "udp", "gre", "esp", "ah")
PORT_RE = re.compile(r"^(\d{1,5})(?::(\d{1,5}))?$")


def _b64(s: str) -> bytes | None:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None


def prose_checks(op_id: str | None, body: Any, query: dict) -> list[str]:
    """Rules the document states only in prose. Returns error messages (empty = ok)."""
    errs: list[str] = []
    b = body if isinstance(body, dict) else {}
    pp = query.get("per_page")
    if isinstance(pp, int) and not 1 <= pp <= 500:
        errs.append(f"per_page must be between 1 and 500 (\"Default is 100 and Max is "
                    f"500\"), got {pp}")
    if op_id == "list-instances":
        given = [f for f in LIST_FILTERS if f in query]
        if len(given) > 1:
            # govultr#220: `tag` combined with `region` -> this exact message
            errs.append("Only one filter per request is allowed.")
    if op_id == "create-instance":
        srcs = [k for k in IMAGE_SOURCES if b.get(k) not in (None, "", 0)]
        if len(srcs) != 1:
            errs.append("exactly one of os_id, iso_id, snapshot_id, app_id or image_id is "
                        f"required (got {', '.join(srcs) if srcs else 'none'})")
        if b.get("disable_public_ipv4") and not b.get("enable_ipv6"):
            errs.append("disable_public_ipv4 requires enable_ipv6")
        if b.get("vpc_only") and not b.get("attach_vpc"):
            errs.append("vpc_only requires attach_vpc")
        if "tag" in b and "tags" in b:
            errs.append("tag is deprecated: send tags only, not both")
    if op_id in ("create-instance", "update-instance"):
        if "backups" in b and b["backups"] not in ("enabled", "disabled"):
            errs.append(f"backups must be \"enabled\" or \"disabled\", got {b['backups']!r}")
        if "user_scheme" in b and b["user_scheme"] not in ("root", "limited"):
            errs.append(f"user_scheme must be \"root\" or \"limited\", got {b['user_scheme']!r}")
        ud = b.get("user_data")
        if isinstance(ud, str) and ud and _b64(ud) is None:
            errs.append("user_data must be base64 encoded")
    if op_id == "post-firewalls-firewall-group-id-rules":
        errs.extend(_rule_checks(b))
    return errs


def _rule_checks(b: dict) -> list[str]:
    errs = []
    proto = b.get("protocol")
    ip_type = b.get("ip_type")
    if isinstance(proto, str) and proto not in PROTOCOLS:
        hint = " (must be lowercase)" if proto.lower() in PROTOCOLS else ""
        errs.append(f"protocol must be one of {', '.join(PROTOCOLS)}{hint}, got {proto!r}")
    if isinstance(ip_type, str) and ip_type not in ("v4", "v6"):
        errs.append(f"ip_type must be \"v4\" or \"v6\", got {ip_type!r}")
    subnet, size = b.get("subnet"), b.get("subnet_size")
    if ip_type in ("v4", "v6") and isinstance(subnet, str):
        try:
            addr = ipaddress.ip_address(subnet)
        except ValueError:
            errs.append(f"subnet {subnet!r} is not an IP address")
        else:
            want = 4 if ip_type == "v4" else 6
            if addr.version != want:
                errs.append(f"subnet {subnet!r} does not match ip_type {ip_type!r}")
            elif isinstance(size, int) and not 0 <= size <= (32 if want == 4 else 128):
                errs.append(f"subnet_size {size} is out of range for {ip_type}")
    port = b.get("port")
    if port not in (None, ""):
        if proto in ("tcp", "udp"):
            m = PORT_RE.match(port) if isinstance(port, str) else None
            lo = int(m.group(1)) if m else 0
            hi = int(m.group(2)) if m and m.group(2) else lo
            if not m or not (1 <= lo <= hi <= 65535):
                errs.append(f"port {port!r} must be a port (\"443\") or a colon separated "
                            "range (\"40000:41000\") within 1-65535")
        elif proto in PROTOCOLS:
            errs.append(f"port is for TCP/UDP only, not {proto}")
    src = b.get("source")
    if src not in (None, "", "cloudflare") and not re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", str(src)):
        errs.append(f"source must be \"\", \"cloudflare\" or a load balancer id, got {src!r}")
    return errs
