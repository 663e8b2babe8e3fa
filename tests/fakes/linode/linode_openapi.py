"""Validation against the official Linode API v4 OpenAPI document, with named relaxations.

The document (shared/specs/linode-openapi.yaml, v4.189.0, OpenAPI 3.0.1, 3.6 MB) is never
edited. It is parsed once (YAML, ~3 s) and cached as JSON by ../openapi_check.py; the
relaxations below are then applied to the in-memory copy at every start (~20 ms).

Each relaxation fixes one *known defect* of the document (shared/specs/README.md,
shared/cloud-apis.md §4) and nothing more; everything else stays as strict as the
document says. `RELAXATIONS` names them; `relax()` applies them and returns one record
per relaxation with the places it touched, which the fake reports in /_fake/health.

Beyond the shared validator this module adds:
  * structured problems {"field", "reason"} for Linode's error shape,
  * Linode's date-time format (no UTC offset) for the format checker,
  * image IDs that contain a slash in the path (`linode/ubuntu24.04`),
  * the X-Filter header, which is JSON text.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import openapi_check  # noqa: E402  (exits with a message naming fake-deps if deps are missing)
from openapi_check import ValidationResult  # noqa: E402,F401
from jsonschema import FormatChecker  # noqa: E402
from jsonschema.exceptions import best_match  # noqa: E402
from openapi_schema_validator import OAS30Validator  # noqa: E402

ENV_VAR = "SFUCTL_LINODE_OPENAPI"
SPEC_FILE = "linode-openapi.yaml"
CACHE_PREFIX = "linode-openapi"

RELAXATIONS = {
    "allof-additional-properties": (
        "Request bodies are `allOf` of branches that each say `additionalProperties: "
        "false`, so any property of the other branch is 'additional' and every valid "
        "body is rejected (POST /linode/instances, POST /networking/firewalls, PUT "
        ".../rules, POST .../devices; Prism gives 422 for a valid firewall). The branches "
        "are merged into one object schema: properties and `required` are united and "
        "`additionalProperties: false` is kept against the union, so unknown fields are "
        "still rejected."),
    "devices-body-readonly": (
        "POST /networking/firewalls/{id}/devices: the body schema is the response's "
        "entity object, marked `readOnly: true` as a whole, so a write validator rejects "
        "every body. `readOnly` is dropped at the body's root only (`label` and `url` "
        "stay read-only)."),
    "required-on-array": (
        "Firewall create and rules PUT put `required: [action, addresses, protocol]` on "
        "the `inbound`/`outbound` *arrays*, where JSON Schema ignores it. It is moved to "
        "the array items, where the document means it (this one tightens)."),
    "date-time-without-offset": (
        "Linode sends timestamps as `2018-01-01T00:01:01` (UTC, no offset); every "
        "date-time example in the document has that form, but `format: date-time` "
        "(RFC 3339) requires an offset. The format checker also accepts "
        "YYYY-MM-DDTHH:MM:SS[.ffffff] without one."),
    "host-uuid-not-uuid": (
        "Instance `host_uuid` is `format: uuid`, but Linode's values (and the example "
        "`3a3ddd59d9a78bb8de041391075df44de62bfec8`) are 40 hex digits. The format is "
        "dropped for `host_uuid` only."),
    "null-rdns-gateway": (
        "GET /linode/instances/{id}/ips: `rdns` of `ipv6.slaac`/`ipv6.link_local` and "
        "`gateway`/`rdns` of `ipv4.private[]` are not nullable, but Linode and the "
        "document's own examples send null there. Those fields become nullable."),
    "backups-last-successful-null": (
        "Instance `backups.last_successful`: its description says it is null when there "
        "was no backup (so for every new Linode), but it is not nullable. Made nullable."),
    "region-site-type": (
        "Region objects declare `site-type` (hyphen) with `additionalProperties: false`; "
        "the API sends `site_type` (linodego, cloud-apis.md). Renamed to `site_type`."),
    "x-filter-json": (
        "The X-Filter header is JSON text, but it is declared with an object `schema` "
        "(OAS would serialise that as k,v pairs) and as `oneOf` of 'any object' and "
        "'operator object', so an operator-only filter such as {\"+order_by\":\"label\"} "
        "matches both and fails oneOf. The header is parsed as JSON and checked with "
        "`anyOf`."),
    "image-id-slash": (
        "Image IDs contain a slash (`linode/ubuntu24.04`), so GET /images/{imageId} can "
        "never match a one-segment path parameter (Prism answers 404). The imageId path "
        "parameter may span one '/'."),
}


def default_spec_path() -> str:
    return openapi_check.find_spec(SPEC_FILE, ENV_VAR)


# --------------------------------------------------------------------------- relaxations
def _walk(node, ptr=""):
    """Yields (json_pointer, dict) for every dict in the document."""
    if isinstance(node, dict):
        yield ptr, node
        for k, v in node.items():
            yield from _walk(v, f"{ptr}/{str(k).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{ptr}/{i}")


class MergeConflict(ValueError):
    pass


def _merge(a: dict, b: dict) -> dict:
    """Merge two object schemas that must both hold (allOf) into one."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif k == "properties":
            props = dict(out[k])
            for pk, pv in v.items():
                props[pk] = _merge(props[pk], pv) if pk in props else pv
            out[k] = props
        elif k == "required":
            out[k] = list(dict.fromkeys(list(out[k]) + list(v)))
        elif k == "additionalProperties":
            if out[k] is False or v is False:
                out[k] = False
            elif out[k] != v:
                raise MergeConflict(f"additionalProperties {out[k]!r} vs {v!r}")
        elif k in ("description", "example", "title") or k.startswith("x-"):
            continue
        elif out[k] != v:
            raise MergeConflict(f"{k}: {out[k]!r} vs {v!r}")
    return out


def _merge_allof(schema: dict) -> dict:
    parts = []
    for branch in schema["allOf"]:
        parts.append(_merge_allof(branch) if "allOf" in branch else branch)
    own = {k: v for k, v in schema.items() if k != "allOf"}
    merged: dict = {}
    for p in parts + [own]:
        merged = _merge(merged, p)
    return merged


def relax(doc: dict) -> list[dict]:
    records = {name: [] for name in RELAXATIONS}
    # 1. allOf + additionalProperties:false (request bodies only: that is where it bites)
    skipped = []
    for ptr, node in list(_walk(doc.get("paths", {}), "/paths")):
        schema = node.get("schema") if "/requestBody/content/" in ptr else None
        if not (isinstance(schema, dict) and "allOf" in schema):
            continue
        if not any(isinstance(b, dict) and b.get("additionalProperties") is False
                   for b in schema["allOf"]):
            continue
        try:
            merged = _merge_allof(schema)
        except MergeConflict as e:
            skipped.append(f"{ptr}: {e}")
            continue
        if "~1devices/post/" in ptr and merged.get("readOnly") is True:
            del merged["readOnly"]
            records["devices-body-readonly"].append(ptr + "/schema")
        node["schema"] = merged
        records["allof-additional-properties"].append(ptr + "/schema")
        # 2. required on an array -> its items (firewall rules)
        rules = merged.get("properties", {}).get("rules")
        if isinstance(rules, dict):
            for side in ("inbound", "outbound"):
                arr = rules.get("properties", {}).get(side)
                if isinstance(arr, dict) and arr.get("type") == "array" and "required" in arr:
                    req = arr.pop("required")
                    arr["items"] = dict(arr.get("items", {}))
                    arr["items"]["required"] = list(
                        dict.fromkeys(arr["items"].get("required", []) + req))
                    records["required-on-array"].append(
                        f"{ptr}/schema/properties/rules/properties/{side}")
    # 3. nullability, host_uuid, site-type (walk every schema once)
    for ptr, node in _walk(doc.get("paths", {}), "/paths"):
        props = node.get("properties")
        if not isinstance(props, dict):
            continue
        hu = props.get("host_uuid")
        if isinstance(hu, dict) and hu.get("format") == "uuid":
            del hu["format"]
            records["host-uuid-not-uuid"].append(ptr + "/properties/host_uuid")
        for key in ("slaac", "link_local"):
            sub = props.get(key)
            if isinstance(sub, dict) and isinstance(sub.get("properties", {}).get("rdns"), dict):
                sub["properties"]["rdns"]["nullable"] = True
                records["null-rdns-gateway"].append(f"{ptr}/properties/{key}/properties/rdns")
        priv = props.get("private")
        if (isinstance(priv, dict) and priv.get("type") == "array"
                and isinstance(priv.get("items"), dict) and "~1ips/" in ptr):
            for f in ("gateway", "rdns"):
                fs = priv["items"].get("properties", {}).get(f)
                if isinstance(fs, dict):
                    fs["nullable"] = True
                    records["null-rdns-gateway"].append(
                        f"{ptr}/properties/private/items/properties/{f}")
        bk = props.get("backups")
        if isinstance(bk, dict):
            ls = bk.get("properties", {}).get("last_successful")
            if isinstance(ls, dict) and not ls.get("nullable"):
                ls["nullable"] = True
                records["backups-last-successful-null"].append(
                    f"{ptr}/properties/backups/properties/last_successful")
        if "site-type" in props and "site_type" not in props:
            props["site_type"] = props.pop("site-type")
            records["region-site-type"].append(ptr + "/properties/site-type")
    # 4. X-Filter: oneOf -> anyOf (JSON parsing is done by the validator below)
    for ptr, node in _walk(doc.get("paths", {}), "/paths"):
        if node.get("in") == "header" and node.get("name") == "X-Filter":
            sch = node.get("schema", {})
            if "oneOf" in sch:
                sch["anyOf"] = sch.pop("oneOf")
                records["x-filter-json"].append(ptr)
    records["image-id-slash"] = ["path parameter imageId (LinodeValidator router)"]
    records["date-time-without-offset"] = ["format checker 'date-time' (LinodeValidator)"]
    out = [{"name": n, "why": RELAXATIONS[n], "places": len(p), "where": p}
           for n, p in records.items()]
    if skipped:
        out.append({"name": "allof-additional-properties (not merged)", "why":
                    "conflicting branches; left as published", "places": len(skipped),
                    "where": skipped})
    return out


# --------------------------------------------------------------------------- formats
_NAIVE_DT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$")


def linode_date_time(value) -> bool:
    if not isinstance(value, str):
        return True
    if _NAIVE_DT.match(value):
        datetime.fromisoformat(value)  # ValueError for 2024-13-45T99:00:00
        return True
    return bool(FORMAT_BASE.checkers["date-time"][0](value))


FORMAT_BASE = OAS30Validator.FORMAT_CHECKER


def _checker(base: FormatChecker) -> FormatChecker:
    fc = FormatChecker(())
    fc.checkers = dict(base.checkers)
    fc.checkers["date-time"] = (linode_date_time, (ValueError, TypeError))
    return fc


def dotted(parts) -> str | None:
    """JSON path parts -> 'rules.inbound[0].ports' (None for the root)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


_REQUIRED_RE = re.compile(r"^'([^']+)' is a required property$")


def problems_from(errors) -> list[dict]:
    out = []
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        best = best_match([err]) if err.context else err
        parts = list(best.absolute_path)
        m = _REQUIRED_RE.match(best.message)
        if best.validator == "required" and m:
            parts.append(m.group(1))
            reason = f"{dotted(parts)} is required"
        else:
            reason = best.message
        out.append({"field": dotted(parts), "reason": reason})
    return out


# --------------------------------------------------------------------------- validator
class LinodeValidator(openapi_check.OpenAPIValidator):
    def __init__(self, spec_path: str | None = None, use_cache: bool = True):
        path = spec_path or default_spec_path()
        if not os.path.exists(path):
            raise SystemExit(f"OpenAPI document not found: {path} (set --spec or {ENV_VAR})")
        doc, info = openapi_check.load_document(path, use_cache, CACHE_PREFIX)
        t0 = time.monotonic()
        self.relaxations = relax(doc)
        info["relax_seconds"] = round(time.monotonic() - t0, 3)
        super().__init__(doc, info)
        self.spec_path = path
        for o in self.operations:  # image IDs contain one '/'
            if "{imageId}" in o.template:
                o.regex = self._image_regex(o.template)
        self._fc = {}

    @staticmethod
    def _image_regex(template: str) -> re.Pattern:
        parts = []
        for seg in template.split("/"):
            if seg == "{imageId}":
                parts.append("([^/]+(?:/[^/]+)?)")
            elif re.fullmatch(r"\{[^}]+\}", seg):
                parts.append("([^/]+)")
            else:
                parts.append(re.escape(seg))
        return re.compile("^" + "/".join(parts) + "$")

    def _format_checker(self, cls):
        fc = self._fc.get(cls)
        if fc is None:
            fc = self._fc[cls] = _checker(cls.FORMAT_CHECKER)
        return fc

    # same as the base class, with Linode's date-time format
    def _validator(self, pointer: str, schema: dict, cls):
        key = (pointer, cls)
        v = self._validators.get(key)
        if v is None:
            v = cls({"$ref": f"{openapi_check.SPEC_URI}#{pointer}"} if pointer else schema,
                    registry=self.registry, format_checker=self._format_checker(cls))
            self._validators[key] = v
        return v

    def _param_validator(self, schema: dict):
        key = ("param", id(schema))
        v = self._validators.get(key)
        if v is None:
            v = OAS30Validator(self.inline(schema),
                               format_checker=self._format_checker(OAS30Validator))
            self._validators[key] = (v, schema)
            return v
        return v[0]

    def _check_param(self, p: dict, raws, res):
        if p.get("in") == "header" and p.get("name") == "X-Filter" and raws:
            try:
                value = json.loads(raws[-1])
            except ValueError as e:
                res.errors.append(f"header parameter 'X-Filter' is not valid JSON: {e}")
                return None
            errs = list(self._param_validator(p["schema"]).iter_errors(value))
            for err in errs:
                res.errors.append(f"header parameter 'X-Filter': {err.message}")
            return value
        return super()._check_param(p, raws, res)

    def validate_request(self, method, path, query_string="", headers=None, body=None):
        res = super().validate_request(method, path, query_string, headers, body)
        res.problems = []
        if res.ok:
            return res
        # Structured form for Linode's {"errors":[{"field","reason"}]}: body problems
        # from the schema errors, everything else from the text lines.
        o, _, _ = self.find(method, path)
        body_done = False
        if o is not None and isinstance(res.body, (dict, list)) and any(
                e.startswith("request body /") or e.startswith("request body (root)")
                for e in res.errors):
            ptr = self._ptr("paths", o.template, o.method, "requestBody", "content",
                            "application/json", "schema")
            from openapi_schema_validator import OAS30WriteValidator
            v = self._validator(ptr, None, OAS30WriteValidator)
            res.problems.extend(problems_from(v.iter_errors(res.body)))
            body_done = True
        for line in res.errors:
            if body_done and line.startswith("request body "):
                continue
            m = re.match(r"^(?:path|query|header) parameter '([^']+)'(?::| )\s*(.*)$", line)
            if m:
                name, rest = m.group(1), m.group(2)
                res.problems.append({"field": name, "reason": (
                    f"{name} {rest}" if rest.startswith("is ") or rest.startswith("given")
                    else rest)})
            else:
                res.problems.append({"field": None, "reason": line})
        return res
