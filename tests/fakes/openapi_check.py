"""Generic OpenAPI 3.0 request/response validation for the cloud fakes under tests/fakes.

Shared by the DigitalOcean, Linode and Vultr fakes (do_openapi.py, linode_openapi.py, vultr_openapi.py): the validator works
on an already-loaded document, so each fake loads its own file (YAML with a JSON cache,
or plain JSON), applies the load-time patches it needs (named, each with its reason),
and hands the result over:

    doc, info = load_document(path, cache_prefix="vultr-openapi")
    apply_my_patches(doc)
    v = OpenAPIValidator(doc, info)
    res = v.validate_request("POST", "/instances", "", headers, body_bytes)

Schema semantics come from `openapi-schema-validator` (OAS 3.0 dialect: `nullable`,
OAS formats, readOnly/writeOnly handling):
  * request bodies  -> OAS30WriteValidator (readOnly properties may not be sent and
                       are not `required`)
  * responses       -> OAS30ReadValidator  (used by the self-tests)
  * parameters      -> OAS30Validator      (readOnly is ignored there)
Routing (literal segments win over templated ones), parameter extraction/casting and
content-type checks are done here. $refs are resolved lazily with `referencing`
against the whole document, so defects in unrelated parts of a document never matter.
Operations are looked up by the path *relative to the server URL* (strip "/v2" etc.
first).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

MISSING_DEPS_MSG = (
    "The cloud fakes need PyYAML and openapi-schema-validator (pinned in "
    "tests/fakes/requirements.txt). Install them with `scripts/testbed/fake-deps` "
    "(as root) and run the fake with /opt/sfuctl-testbed/venv/bin/python. "
    "Request validation is never skipped."
)

try:
    import yaml
    from jsonschema.exceptions import best_match
    from openapi_schema_validator import (
        OAS30ReadValidator,
        OAS30Validator,
        OAS30WriteValidator,
    )
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4
except ImportError as exc:  # pragma: no cover - exercised by hand
    raise SystemExit(f"{MISSING_DEPS_MSG}\n(import error: {exc})")

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SPEC_URI = "urn:sfuctl-fake-openapi"


def find_spec(filename: str, env_var: str) -> str:
    """`$env_var`, else ../shared/specs/<filename> beside the repo, else shared/specs in
    the repo, else /work/shared/specs. Returns the first candidate if none exists."""
    env = os.environ.get(env_var)
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.normpath(os.path.join(here, "..", ".."))
    cands = [
        os.path.join(repo, "..", "shared", "specs", filename),
        os.path.join(repo, "shared", "specs", filename),
        os.path.join("/work/shared/specs", filename),
    ]
    for cand in cands:
        if os.path.exists(cand):
            return os.path.normpath(cand)
    return os.path.normpath(cands[0])


def cache_dir() -> str:
    return os.environ.get("SFUCTL_FAKE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or tempfile.gettempdir(),
        "sfuctl-testbed-cache",
    )


def load_document(path: str, use_cache: bool = True,
                  cache_prefix: str = "openapi") -> tuple[dict, dict]:
    """Returns (document, info). JSON is parsed directly (fast); YAML is parsed once and
    cached as JSON keyed by the SHA-256 of the file. The file itself is never written."""
    t0 = time.monotonic()
    with open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    info: dict[str, Any] = {"path": path, "sha256": digest, "bytes": len(raw)}
    if path.endswith(".json"):
        doc = json.loads(raw)
        info["source"] = "json"
    else:
        cache_file = os.path.join(cache_dir(), f"{cache_prefix}-{digest[:24]}.json")
        info["cache_file"] = cache_file
        doc = None
        if use_cache and os.path.exists(cache_file):
            try:
                with open(cache_file, "rb") as f:
                    doc = json.loads(f.read())
                info["source"] = "json-cache"
            except (OSError, ValueError):
                doc = None
        if doc is None:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            doc = yaml.load(raw, Loader=loader)
            info["source"] = "yaml" + ("+libyaml" if loader is not yaml.SafeLoader else "")
            if use_cache:
                try:
                    os.makedirs(cache_dir(), exist_ok=True)
                    fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".tmp")
                    with os.fdopen(fd, "w") as f:
                        json.dump(doc, f)
                    os.replace(tmp, cache_file)  # atomic: safe with parallel fakes
                    info["cache_written"] = cache_file
                except OSError:
                    pass
    info["load_seconds"] = round(time.monotonic() - t0, 3)
    return doc, info


@dataclass
class Operation:
    method: str
    template: str
    regex: re.Pattern
    param_names: list[str]
    op: dict
    params: list[dict]  # resolved parameter objects
    literal_segments: int


@dataclass
class ValidationResult:
    ok: bool
    operation_id: str | None = None
    template: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    path_params: dict = field(default_factory=dict)
    query: dict = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0

    @property
    def message(self) -> str:
        return "; ".join(self.errors)


def _fmt_path(err) -> str:
    parts = [str(p) for p in err.absolute_path]
    return "/" + "/".join(parts) if parts else "(root)"


def _leaf_errors(err, out: list) -> None:
    if err.context:
        for sub in err.context:
            _leaf_errors(sub, out)
    else:
        out.append(err)


def _explain(errors: list, what: str) -> list[str]:
    msgs = []
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        if err.context:
            best = best_match([err])
            leaves: list = []
            _leaf_errors(err, leaves)
            detail = sorted({f"{_fmt_path(l)}: {l.message}" for l in leaves})
            msgs.append(
                f"{what} {_fmt_path(err)}: {err.message} (best match: "
                f"{_fmt_path(best)}: {best.message}; all alternatives: "
                + " | ".join(detail[:12])
                + ")"
            )
        else:
            msgs.append(f"{what} {_fmt_path(err)}: {err.message}")
    return msgs


class OpenAPIValidator:
    def __init__(self, doc: dict, load_info: dict | None = None):
        t0 = time.monotonic()
        self.doc = doc
        self.load_info = dict(load_info or {})
        if not str(self.doc.get("openapi", "")).startswith("3.0"):
            raise SystemExit(f"{self.load_info.get('path', 'document')}: expected an "
                             "OpenAPI 3.0 document")
        resource = Resource(contents=self.doc, specification=DRAFT4)
        self.registry = Registry().with_resource(SPEC_URI, resource)
        self.operations: list[Operation] = []
        for template, item in self.doc.get("paths", {}).items():
            path_params = item.get("parameters", [])
            names: list[str] = []

            def seg_re(seg: str) -> str:
                m = re.fullmatch(r"\{([^}]+)\}", seg)
                if m:
                    names.append(m.group(1))
                    return "([^/]+)"
                return re.escape(seg)

            rx = re.compile(
                "^" + "/".join(seg_re(s) for s in template.split("/")) + "$"
            )
            literal = sum(1 for s in template.split("/") if s and "{" not in s)
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                op = item[method]
                merged: dict[tuple, dict] = {}
                for p in list(path_params) + list(op.get("parameters", [])):
                    p = self.deref(p)
                    if "in" not in p or "name" not in p:
                        raise ValueError(f"{method.upper()} {template}: parameter without "
                                         f"'in'/'name' ({p}); patch the document first")
                    merged[(p["name"], p["in"])] = p
                self.operations.append(
                    Operation(method, template, rx, list(names), op,
                              list(merged.values()), literal)
                )
        # most specific templates first
        self.operations.sort(key=lambda o: (-o.literal_segments, o.template))
        self._validators: dict[tuple, Any] = {}
        self.init_seconds = round(time.monotonic() - t0, 3)

    # -- helpers ---------------------------------------------------------------
    def deref(self, node: Any, depth: int = 0) -> Any:
        while isinstance(node, dict) and "$ref" in node and depth < 50:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"external $ref not supported: {ref}")
            cur: Any = self.doc
            for part in ref[2:].split("/"):
                cur = cur[part.replace("~1", "/").replace("~0", "~")]
            node = cur
            depth += 1
        return node

    def _validator(self, pointer: str, schema: dict, cls) -> Any:
        key = (pointer, cls)
        v = self._validators.get(key)
        if v is None:
            # Wrap with a $ref into the document so internal "#/components/..." refs
            # resolve against the whole spec.
            v = cls(
                {"$ref": f"{SPEC_URI}#{pointer}"} if pointer else schema,
                registry=self.registry,
                format_checker=cls.FORMAT_CHECKER,
            )
            self._validators[key] = v
        return v

    @staticmethod
    def _ptr(*parts: str) -> str:
        return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)

    def find(self, method: str, path: str) -> tuple[Operation | None, dict, list[str]]:
        method = method.lower()
        allowed: list[str] = []
        for o in self.operations:
            m = o.regex.match(path)
            if not m:
                continue
            if o.method == method:
                return o, {n: unquote(v) for n, v in zip(o.param_names, m.groups())}, []
            allowed.append(o.method.upper())
        return None, {}, allowed

    def inline(self, node: Any, depth: int = 0) -> Any:
        """Copy of a (small, non-recursive) schema with every $ref replaced inline."""
        if depth > 20:
            raise ValueError("schema nests too deeply to inline")
        if isinstance(node, dict):
            if "$ref" in node:
                return self.inline(self.deref(node), depth + 1)
            return {k: self.inline(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list):
            return [self.inline(v, depth + 1) for v in node]
        return node

    def _param_validator(self, schema: dict) -> Any:
        key = ("param", id(schema))
        v = self._validators.get(key)
        if v is None:
            v = OAS30Validator(self.inline(schema),
                               format_checker=OAS30Validator.FORMAT_CHECKER)
            self._validators[key] = (v, schema)  # keep schema alive: id() stays unique
            return v
        return v[0]

    def _check_value(self, schema: dict, raw: str, where: str) -> tuple[Any, str | None]:
        """Cast a raw string parameter by trying typed candidates against the schema."""
        cands: list[Any] = []
        if re.fullmatch(r"-?\d+", raw):
            cands.append(int(raw))
        if re.fullmatch(r"-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", raw):
            try:
                cands.append(float(raw))
            except ValueError:
                pass
        if raw in ("true", "false"):
            cands.append(raw == "true")
        cands.append(raw)
        v = self._param_validator(schema)
        first_err = None
        want = self.deref(schema).get("type") if isinstance(schema, dict) else None
        for c in cands:
            errs = list(v.iter_errors(c))
            if not errs:
                return c, None
            typ = {int: "integer", float: "number", bool: "boolean", str: "string"}[type(c)]
            if first_err is None or typ == want:
                first_err = best_match(errs)
        return raw, f"{where}: {first_err.message}" if first_err else f"{where}: invalid"

    def _check_param(self, p: dict, raws: list[str] | None, res: ValidationResult):
        where = f"{p['in']} parameter '{p['name']}'"
        if raws is None or raws == []:
            if p.get("required"):
                res.errors.append(f"{where} is required")
            return None
        schema = p.get("schema")
        if schema is None:  # content-based (or schema-less) parameters: not checked
            return raws[-1]
        sch = self.deref(schema)
        if sch.get("type") == "array":
            style = p.get("style", "form" if p["in"] in ("query", "cookie") else "simple")
            explode = p.get("explode", style == "form")
            items = raws if (explode and p["in"] == "query") else [
                x for r in raws for x in r.split(",")
            ]
            item_schema = sch.get("items", {})
            out = []
            for i, raw in enumerate(items):
                val, err = self._check_value(item_schema, raw, f"{where}[{i}]")
                if err:
                    res.errors.append(err)
                out.append(val)
            for err in OAS30Validator(
                {k: v for k, v in sch.items() if k not in ("items", "$ref")}
            ).iter_errors(out):
                res.errors.append(f"{where}: {err.message}")
            return out
        if len(raws) > 1:
            res.errors.append(f"{where} given {len(raws)} times, the schema allows one value")
        val, err = self._check_value(schema, raws[-1], where)
        if err:
            res.errors.append(err)
        return val

    # -- requests ----------------------------------------------------------------
    def validate_request(
        self,
        method: str,
        path: str,
        query_string: str = "",
        headers: dict | None = None,
        body: bytes | None = None,
    ) -> ValidationResult:
        t0 = time.perf_counter()
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        res = ValidationResult(ok=False)
        o, path_params, allowed = self.find(method, path)
        if o is None:
            if allowed:
                res.errors.append(
                    f"{method.upper()} is not defined for {path} in the OpenAPI document "
                    f"(defined: {', '.join(sorted(set(allowed)))})"
                )
            else:
                res.errors.append(f"no path in the OpenAPI document matches {path}")
            res.seconds = time.perf_counter() - t0
            return res
        res.operation_id = o.op.get("operationId")
        res.template = o.template
        query = parse_qs(query_string, keep_blank_values=True)
        declared_q = set()
        for p in o.params:
            loc, name = p["in"], p["name"]
            if loc == "path":
                raw = path_params.get(name)
                res.path_params[name] = self._check_param(
                    p, [raw] if raw is not None else None, res
                )
            elif loc == "query":
                declared_q.add(name)
                val = self._check_param(p, query.get(name), res)
                if name in query:
                    res.query[name] = val
            elif loc == "header":
                raw = headers.get(name.lower())
                if name.lower() in ("authorization", "content-type", "accept"):
                    continue  # OAS: these are ignored as parameters
                self._check_param(p, [raw] if raw is not None else None, res)
        for name in query:
            if name not in declared_q:
                res.warnings.append(
                    f"query parameter '{name}' is not declared for "
                    f"{o.method.upper()} {o.template}"
                )
        # body
        rb = o.op.get("requestBody")
        has_body = bool(body) and body.strip() != b""
        if rb is not None:
            rb = self.deref(rb)
            content = rb.get("content", {})
            if not has_body:
                if rb.get("required"):
                    res.errors.append("request body is required")
            else:
                ctype = headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype not in content:
                    res.errors.append(
                        f"Content-Type '{ctype or '(none)'}' is not one of "
                        f"{sorted(content)} declared for this operation"
                    )
                elif "json" in ctype:
                    try:
                        res.body = json.loads(body)
                    except ValueError as e:
                        res.errors.append(f"request body is not valid JSON: {e}")
                    else:
                        media = content[ctype]
                        if "schema" in media:
                            ptr = self._ptr("paths", o.template, o.method,
                                            "requestBody", "content", ctype, "schema")
                            if "$ref" in o.op["requestBody"]:
                                ref = o.op["requestBody"]["$ref"][1:]
                                ptr = ref + self._ptr("content", ctype, "schema")
                            v = self._validator(ptr, media["schema"], OAS30WriteValidator)
                            errs = list(v.iter_errors(res.body))
                            res.errors.extend(_explain(errs, "request body"))
        elif has_body:
            res.warnings.append(
                f"{o.method.upper()} {o.template} declares no request body; "
                "the body sent is ignored"
            )
        res.ok = not res.errors
        res.seconds = time.perf_counter() - t0
        return res

    # -- responses (self-tests) --------------------------------------------------
    def validate_response(
        self, method: str, path: str, status: int, headers: dict, body: bytes
    ) -> list[str]:
        o, _, _ = self.find(method, path)
        if o is None:
            return [f"no operation for {method} {path}"]
        responses = o.op.get("responses", {})
        key = str(status)
        if key not in responses:
            key = f"{str(status)[0]}XX" if f"{str(status)[0]}XX" in responses else "default"
        if key not in responses:
            return [f"status {status} is not declared for {method.upper()} {o.template}"]
        resp = self.deref(responses[key])
        errors: list[str] = []
        if key == "default" and 200 <= status < 300:
            errors.append(f"success status {status} only matches 'default'")
        hdrs = {k.lower(): v for k, v in headers.items()}
        for hname, hdef in (resp.get("headers") or {}).items():
            hdef = self.deref(hdef)
            if hname.lower() not in hdrs:
                if hdef.get("required"):
                    errors.append(f"response header {hname} missing")
                continue
            if "schema" in hdef:
                _, err = self._check_value(hdef["schema"], hdrs[hname.lower()],
                                           f"response header {hname}")
                if err:
                    errors.append(err)
        content = resp.get("content")
        if not content:
            if body and body.strip():
                errors.append(f"status {status} declares no content but a body was sent")
            return errors
        ctype = hdrs.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in content:
            errors.append(f"response Content-Type {ctype!r} not in {sorted(content)}")
            return errors
        try:
            data = json.loads(body)
        except ValueError as e:
            return errors + [f"response body is not JSON: {e}"]
        ref_ptr = None
        if "$ref" in responses[key]:
            ref_ptr = responses[key]["$ref"][1:] + self._ptr("content", ctype, "schema")
        else:
            ref_ptr = self._ptr("paths", o.template, o.method, "responses", key,
                                "content", ctype, "schema")
        v = self._validator(ref_ptr, content[ctype].get("schema", {}), OAS30ReadValidator)
        errors.extend(_explain(list(v.iter_errors(data)), "response body"))
        return errors
