#!/usr/bin/env python3
"""Stateful fake of the Linode (Akamai) API v4 for sfuctl's tests.

Every request under /v4 is validated against the official OpenAPI document
(shared/specs/linode-openapi.yaml), with the document's known defects relaxed at load
time (linode_openapi.RELAXATIONS); a request the document rejects is logged as a
violation and answered 400 {"errors":[{"field","reason"}]}.
See README.md next to this file for flags and the /_fake control API.

Start:  /opt/sfuctl-testbed/venv/bin/python tests/fakes/linode/server.py \
            --port 0 --port-file /tmp/linode.port --token T --address-pool 10.200.101.2
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from linode_openapi import LinodeValidator  # noqa: E402  (exits naming fake-deps if deps are missing)
from state import (LOGIN_USER, ApiError, FakeState, all_images, all_regions,  # noqa: E402
                   all_types, image_obj, region_obj, type_obj)

GENERAL_PER_MINUTE = 400      # "400/min for all commands"
LIST_PER_MINUTE = 200         # paginated collection GETs
IMAGES_PER_MINUTE = 20        # GET /images
TOO_MANY = "Too many requests"

FAULT_REASONS = {
    429: TOO_MANY,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def load_freshvms():
    """The VM helper, imported only for --boot-vms. SFUCTL_FAKE_FRESHVM may name a module
    file with the same interface (the self-tests use a mock)."""
    path = os.environ.get("SFUCTL_FAKE_FRESHVM") or os.path.join(
        os.path.dirname(HERE), "freshvm.py")
    spec = importlib.util.spec_from_file_location("freshvm", path)
    if spec is None or not os.path.exists(path):
        raise SystemExit(f"--boot-vms needs {path} (class FreshVms)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.FreshVms(owner_pid=os.getpid())


class Window:
    """Sliding-window counter: allow() records a request if it fits."""

    def __init__(self, limit: int, seconds: float):
        self.limit, self.seconds = limit, seconds
        self.q: collections.deque = collections.deque()

    def _trim(self, now: float) -> None:
        while self.q and self.q[0] <= now - self.seconds:
            self.q.popleft()

    def allow(self, now: float) -> bool:
        self._trim(now)
        if len(self.q) >= self.limit:
            return False
        self.q.append(now)
        return True

    def retry_after(self, now: float) -> int:
        self._trim(now)
        return max(1, int(self.q[0] + self.seconds - now + 0.999)) if self.q else 1

    def headers(self, now: float) -> dict:
        self._trim(now)
        reset = int(self.q[0] + self.seconds) if self.q else int(now + self.seconds)
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(max(0, self.limit - len(self.q))),
                "X-RateLimit-Reset": str(reset)}


class Fake:
    def __init__(self, args):
        self.args = args
        self.validator = LinodeValidator(args.spec, use_cache=not args.no_spec_cache)
        doc = self.validator.doc
        self.public_ops = set()
        for o in self.validator.operations:
            sec = o.op.get("security", doc.get("security"))
            if not sec or {} in sec:
                self.public_ops.add(o.op.get("operationId"))
        self.filterable = self._filterable(doc)
        self.state = FakeState(args)
        self.lock = self.state.lock
        self.faults: list[dict] = []
        self._fault_ids = 0
        self.log: collections.deque = collections.deque(maxlen=args.max_log)
        self.seq = 0
        self.reset_rates()
        self.log_file = open(args.log_file, "a", buffering=1) if args.log_file else None
        self.vms = load_freshvms() if args.boot_vms else None

    @staticmethod
    def _filterable(doc) -> dict:
        """Fields marked __Filterable__ in the list responses that take X-Filter."""
        out = {}
        for path, item in doc["paths"].items():
            op = item.get("get")
            if not op or not any(p.get("name") == "X-Filter" for p in op.get("parameters", [])):
                continue
            schema = op["responses"]["200"]["content"]["application/json"]["schema"]
            props = schema["properties"]["data"]["items"].get("properties", {})
            out[op["operationId"]] = {k for k, v in props.items()
                                      if "__Filterable__" in v.get("description", "")}
        return out

    def reset_rates(self) -> None:
        n, s = self.args.create_rate_limit
        self.create_window: dict[str, Window] = collections.defaultdict(lambda: Window(n, s))
        self.general: dict[str, Window] = collections.defaultdict(
            lambda: Window(GENERAL_PER_MINUTE, 60))
        self.lists: dict[str, Window] = collections.defaultdict(
            lambda: Window(LIST_PER_MINUTE, 60))
        self.images: dict[str, Window] = collections.defaultdict(
            lambda: Window(IMAGES_PER_MINUTE, 60))

    def record(self, entry: dict) -> None:
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.log.append(entry)
        if self.log_file:
            try:
                self.log_file.write(json.dumps(entry) + "\n")
            except (OSError, ValueError):
                pass

    # ------------------------------------------------------------------ faults
    def take_fault(self, method: str, path: str) -> dict | None:
        with self.lock:
            for f in self.faults:
                if f["remaining"] == 0 or f["method"] not in ("*", method):
                    continue
                if not re.search(f["path_regex"], path):
                    continue
                if f["skip"] > 0:
                    f["skip"] -= 1
                    continue
                if f["remaining"] > 0:
                    f["remaining"] -= 1
                f["hits"] += 1
                return dict(f)
        return None

    def add_fault(self, spec: dict) -> dict:
        action = spec.get("action", "status")
        if action not in ("status", "drop", "delay"):
            raise ApiError(400, "action must be status, drop or delay", "action")
        try:
            re.compile(spec.get("path_regex", ".*"))
        except re.error as e:
            raise ApiError(400, f"path_regex: {e}", "path_regex")
        status = int(spec.get("status", 500))
        with self.lock:
            self._fault_ids += 1
            f = {
                "id": self._fault_ids, "action": action,
                "method": str(spec.get("method", "*")).upper(),
                "path_regex": spec.get("path_regex", ".*"), "status": status,
                "remaining": int(spec.get("count", 1)),  # -1 = forever
                "skip": int(spec.get("skip", 0)),
                "retry_after": spec.get("retry_after"),
                "delay": float(spec.get("delay", 0)),
                "reason": spec.get("reason", FAULT_REASONS.get(
                    status, f"injected HTTP {status}")),
                "hits": 0,
            }
            self.faults.append(f)
            return f


class Dropped(Exception):
    pass


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sfuctl-fake-linode/1"
    fake: Fake = None  # set at start-up

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        if self.fake.args.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                n = int(self.rfile.readline().strip().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(n))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body=None, headers: dict | None = None) -> None:
        data = b"" if body is None else _json(body)
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def dispatch(self) -> None:
        t0 = time.perf_counter()
        url = urlsplit(self.path)
        path, qs = url.path, url.query
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(400, {"errors": [{"reason": "unreadable body"}]})
            return
        if path.startswith("/_fake/") or path == "/_fake":
            try:
                self.control(path, qs, body)
            except ApiError as e:
                self._send(e.status, e.body())
            except Exception as e:  # keep the fake alive, report loudly
                self._send(500, {"errors": [{"reason": f"fake internal error: {e!r}"}]})
            return
        self.api(path, qs, body, t0)

    # ------------------------------------------------------------------ Linode API
    def api(self, path: str, qs: str, raw: bytes, t0: float) -> None:
        fake = self.fake
        request_id = str(uuid.uuid4())
        vr = fake.validator.validate_request(self.command, path, qs, dict(self.headers), raw)
        auth = self.headers.get("Authorization")
        token = auth[7:] if auth and auth.startswith("Bearer ") else ""
        token_ok = token == fake.args.token
        public = vr.operation_id in fake.public_ops
        now = time.time()
        entry = {
            "time": now, "method": self.command, "path": path, "query": qs,
            "operation_id": vr.operation_id, "valid": vr.ok,
            "validation_error": vr.message or None, "validation_errors": vr.errors,
            "warnings": vr.warnings, "validation_ms": round(vr.seconds * 1000, 3),
            "auth_ok": token_ok, "fault": None, "request_id": request_id,
            "oob": bool(self.headers.get("X-Fake-Oob")),
        }
        if vr.body is not None:
            entry["body"] = self._redact(vr.body)
        elif raw:
            entry["body_raw"] = raw[:4096].decode("utf-8", "replace")
        headers = {"X-Request-Id": request_id}
        status, resp = 500, None
        try:
            with fake.lock:
                fake.state.tick(now)
            if not vr.ok:
                headers["X-Fake-Openapi-Violation"] = "1"
                raise ApiError(400, "", errors=[
                    {k: v for k, v in (("field", p["field"]),
                                       ("reason", p["reason"])) if v}
                    for p in vr.problems] or [{"reason": vr.message}])
            if not (token_ok or (public and auth is None)):
                raise ApiError(401, "Invalid Token")
            who = token or "-"
            with fake.lock:
                self.rate_limits(vr, path, who, now, headers)
            fault = fake.take_fault(self.command, path)
            if fault:
                entry["fault"] = {"id": fault["id"], "action": fault["action"],
                                  "status": fault["status"]}
                if fault["delay"]:
                    time.sleep(fault["delay"])
                if fault["action"] == "drop":
                    raise Dropped()
                if fault["action"] == "status":
                    h = {}
                    if fault["retry_after"] is not None:
                        h["Retry-After"] = str(fault["retry_after"])
                    raise ApiError(fault["status"], fault["reason"], headers=h)
            self._extra_headers = headers
            status, resp = self.route(vr, path)
        except Dropped:
            entry["status"] = None
            entry["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            fake.record(entry)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except ApiError as e:
            status, resp = e.status, e.body()
            headers.update(e.headers)
        except Exception as e:  # a bug in the fake: make it visible
            status, resp = 500, {"errors": [{"reason": f"fake internal error: {e!r}"}]}
        entry["status"] = status
        entry["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        # Logged before the answer leaves, so a client reading /_fake/requests right after its call finds it.
        fake.record(entry)
        self._send(status, resp, headers)

    def _who(self) -> str:
        auth = self.headers.get("Authorization") or ""
        return (auth[7:] if auth.startswith("Bearer ") else "") or "-"

    @staticmethod
    def _redact(body):
        if isinstance(body, dict) and "root_pass" in body:
            return dict(body, root_pass="<redacted>")
        return body

    def rate_limits(self, vr, path: str, who: str, now: float, headers: dict) -> None:
        """Instance create is always limited; the rest only with --enforce-rate-limits.
        Sets X-RateLimit-* for the window that applies. Called with the lock held."""
        fake = self.fake
        if vr.operation_id == "post-linode-instance":
            # counts instances created (see route); a full window answers 429 at once
            w = fake.create_window[who]
            w._trim(now)
            if len(w.q) >= w.limit:
                raise ApiError(429, TOO_MANY, headers=dict(
                    w.headers(now), **{"Retry-After": str(w.retry_after(now))}))
            return
        windows = [fake.general[who]]
        if vr.operation_id == "get-images":
            windows.append(fake.images[who])
        elif self.command == "GET" and "page" in [p["name"] for p in self._params(vr)]:
            windows.append(fake.lists[who])
        if fake.args.enforce_rate_limits:
            for w in windows:
                w._trim(now)
                if len(w.q) >= w.limit:
                    raise ApiError(429, TOO_MANY, headers=dict(
                        w.headers(now), **{"Retry-After": str(w.retry_after(now))}))
        for w in windows:
            w.allow(now)
        headers.update(windows[-1].headers(now))

    def _params(self, vr) -> list:
        o, _, _ = self.fake.validator.find(self.command, urlsplit(self.path).path)
        return o.params if o else []

    def route(self, vr, path: str):
        """Returns (status, body)."""
        fake = self.fake
        st = fake.state
        op = vr.operation_id
        b = vr.body if isinstance(vr.body, dict) else {}
        pp, q = vr.path_params, vr.query

        def page(items, conv=lambda x: x):
            return 200, self.paginate([conv(x) for x in items], q)

        if op == "post-linode-instance":
            created = self.create_instance(b)
            with fake.lock:
                w = fake.create_window[self._who()]
                w.allow(time.time())
                self._extra_headers.update(w.headers(time.time()))
            return 200, created
        if op == "delete-linode-instance":
            with fake.lock:
                inst = st.delete_instance(pp["linodeId"])
            if inst["_vm"] and fake.vms is not None:
                fake.vms.destroy(inst["label"])
            return 200, {}
        with fake.lock:
            if op == "get-profile":
                return 200, st.profile()
            if op == "get-regions":
                return page(all_regions())
            if op == "get-region":
                r = region_obj(pp["regionId"])
                if r is None:
                    raise ApiError(404, "Not found")
                return 200, r
            if op == "get-linode-types":
                return page(all_types())
            if op == "get-linode-type":
                t = type_obj(pp["typeId"])
                if t is None:
                    raise ApiError(404, "Not found")
                return 200, t
            if op == "get-images":
                return page(all_images())
            if op == "get-image":
                i = image_obj(pp["imageId"])
                if i is None:
                    raise ApiError(404, "Not found")
                return 200, i
            if op == "get-linode-instances":
                items = sorted(st.instances.values(), key=lambda i: i["id"])
                items = [st.instance_view(i) for i in items]
                flt = self.headers.get("X-Filter")
                if flt:
                    items = apply_filter(items, json.loads(flt),
                                         fake.filterable.get(op, set()))
                return page(items)
            if op == "get-linode-instance":
                return 200, st.instance_view(st.get_instance(pp["linodeId"]))
            if op == "put-linode-instance":
                return 200, st.instance_view(st.update_instance(pp["linodeId"], b))
            if op == "get-linode-ips":
                return 200, st.instance_ips(st.get_instance(pp["linodeId"]))
            if op == "get-linode-firewalls":
                return page(st.instance_firewalls(pp["linodeId"]), st.fw_view)
            if op == "get-firewalls":
                return page(sorted(st.firewalls.values(), key=lambda f: f["id"]), st.fw_view)
            if op == "post-firewalls":
                return 200, st.fw_view(st.create_firewall(b))
            if op == "get-firewall":
                return 200, st.fw_view(st.get_firewall(pp["firewallId"]))
            if op == "put-firewall":
                return 200, st.fw_view(st.update_firewall(pp["firewallId"], b))
            if op == "delete-firewall":
                st.delete_firewall(pp["firewallId"])
                return 200, {}
            if op == "get-firewall-rules":
                return 200, st.rules_view(st.get_firewall(pp["firewallId"]))
            if op == "put-firewall-rules":
                return 200, st.rules_view(st.replace_rules(pp["firewallId"], b))
            if op == "get-firewall-devices":
                return page(st.fw_devices(pp["firewallId"]), st.device_view)
            if op == "post-firewall-device":
                return 200, st.device_view(st.add_device(pp["firewallId"], b))
            if op == "get-firewall-device":
                return 200, st.device_view(st.get_device(pp["firewallId"], pp["deviceId"]))
            if op == "delete-firewall-device":
                st._detach(st.get_device(pp["firewallId"], pp["deviceId"])["id"])
                return 200, {}
            if op == "get-ssh-keys":
                return page(sorted(st.keys.values(), key=lambda k: k["id"]))
            if op == "post-add-ssh-key":
                return 200, st.create_key(b)
            if op == "get-ssh-key":
                return 200, st.get_key(pp["sshKeyId"])
            if op == "delete-ssh-key":
                st.get_key(pp["sshKeyId"])
                del st.keys[pp["sshKeyId"]]
                return 200, {}
        raise ApiError(501, f"the fake does not implement {op} ({self.command} {path}); "
                       "it is valid per the OpenAPI document")

    def create_instance(self, body: dict) -> dict:
        fake, st = self.fake, self.fake.state
        with fake.lock:
            plan = st.prepare_instance(body)
            if fake.vms is None:
                return st.instance_view(st.commit_instance(plan, None))
        try:  # boot outside the lock: other requests go on meanwhile
            ip = fake.vms.boot(plan["label"], plan["user_data"],
                               list(body.get("authorized_keys") or []), LOGIN_USER)
        except Exception as e:
            with fake.lock:
                st.release(plan)
            raise ApiError(500, f"fake: booting a VM for {plan['label']} failed: {e}")
        with fake.lock:
            return st.instance_view(st.commit_instance(plan, ip))

    def paginate(self, items: list, q: dict) -> dict:
        size = int(q.get("page_size") or self.fake.args.page_size)
        page = int(q.get("page") or 1)
        pages = max(1, (len(items) + size - 1) // size)
        return {"data": items[(page - 1) * size: page * size], "page": page,
                "pages": pages, "results": len(items)}

    # ------------------------------------------------------------------ control API
    def control(self, path: str, qs: str, raw: bytes) -> None:
        fake = self.fake
        m = self.command
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise ApiError(400, f"control body is not JSON: {e}")
        q = {k: v[-1] for k, v in parse_qs(qs).items()}
        with fake.lock:
            fake.state.tick()
            if path == "/_fake/health":
                return self._send(200, {
                    "ok": True, "spec": fake.validator.load_info,
                    "validator_init_seconds": fake.validator.init_seconds,
                    "relaxations": [{k: r[k] for k in ("name", "why", "places")}
                                    for r in fake.validator.relaxations]})
            if path == "/_fake/relaxations" and m == "GET":
                return self._send(200, {"relaxations": fake.validator.relaxations})
            if path == "/_fake/state" and m == "GET":
                return self._send(200, fake.state.dump())
            if path == "/_fake/requests" and m == "GET":
                since = int(q.get("since", 0))
                return self._send(200, {"requests": [e for e in fake.log if e["seq"] > since]})
            if path == "/_fake/requests" and m == "DELETE":
                fake.log.clear()
                return self._send(200, {"ok": True})
            if path == "/_fake/violations" and m == "GET":
                return self._send(200, {"violations": [e for e in fake.log if not e["valid"]]})
            if path == "/_fake/faults" and m == "POST":
                specs = body if isinstance(body, list) else [body]
                return self._send(200, {"faults": [fake.add_fault(s) for s in specs]})
            if path == "/_fake/faults" and m == "GET":
                return self._send(200, {"faults": fake.faults})
            if path == "/_fake/faults" and m == "DELETE":
                fake.faults.clear()
                return self._send(200, {"ok": True})
            if path == "/_fake/address-pool" and m == "GET":
                return self._send(200, fake.state.pool_view())
            if path == "/_fake/address-pool" and m == "POST":
                addrs = body.get("addresses", [])
                if isinstance(addrs, str):
                    addrs = addrs.split(",")
                try:
                    fake.state.set_pool(addrs, replace=bool(body.get("replace", False)))
                except ValueError as e:
                    raise ApiError(400, f"bad address: {e}", "addresses")
                return self._send(200, fake.state.pool_view())
            if path == "/_fake/config" and m == "POST":
                self._config(body)
                return self._send(200, fake.state.dump()["config"])
            if path == "/_fake/reset" and m == "POST":
                fake.state.reset(body.get("address_pool"))
                fake.faults.clear()
                fake.log.clear()
                self._config(body)
                fake.reset_rates()
                return self._send(200, {"ok": True})
        raise ApiError(404, f"no control endpoint {m} {path}")

    def _config(self, body: dict) -> None:
        fake = self.fake
        if "boot_delay" in body:
            fake.state.boot_delay = float(body["boot_delay"])
        if "page_size" in body:
            fake.args.page_size = int(body["page_size"])
        if "create_rate_limit" in body:
            fake.args.create_rate_limit = parse_rate(str(body["create_rate_limit"]))
            fake.reset_rates()


# --------------------------------------------------------------------------- X-Filter
def _match_value(value, cond) -> bool:
    if isinstance(cond, dict):
        for opname, arg in cond.items():
            if opname == "+contains":
                ok = (any(isinstance(v, str) and str(arg) in v for v in value)
                      if isinstance(value, list) else str(arg) in str(value or ""))
            elif opname == "+neq":
                ok = (arg not in value) if isinstance(value, list) else value != arg
            elif opname in ("+gt", "+gte", "+lt", "+lte"):
                try:
                    ok = {"+gt": value > arg, "+gte": value >= arg,
                          "+lt": value < arg, "+lte": value <= arg}[opname]
                except TypeError:
                    ok = False
            else:
                raise ApiError(400, f"Unknown filter operator {opname}", "X-Filter")
            if not ok:
                return False
        return True
    if isinstance(value, list):
        return cond in value
    return value == cond


def _match(item: dict, flt: dict, allowed: set) -> bool:
    for key, cond in flt.items():
        if key in ("+order_by", "+order"):
            continue
        if key in ("+and", "+or"):
            if not isinstance(cond, list):
                raise ApiError(400, f"{key} must be a list", "X-Filter")
            results = [_match(item, c, allowed) for c in cond]
            if not (all(results) if key == "+and" else any(results)):
                return False
            continue
        if key not in allowed:
            raise ApiError(400, f"Cannot filter on {key}", "X-Filter")
        if not _match_value(item.get(key), cond):
            return False
    return True


def apply_filter(items: list, flt: dict, allowed: set) -> list:
    if not isinstance(flt, dict):
        raise ApiError(400, "X-Filter must be a JSON object", "X-Filter")
    out = [i for i in items if _match(i, flt, allowed)]
    order_by = flt.get("+order_by")
    if order_by:
        if order_by not in allowed:
            raise ApiError(400, f"Cannot order by {order_by}", "X-Filter")
        out.sort(key=lambda i: (i.get(order_by) is None, i.get(order_by)),
                 reverse=flt.get("+order") == "desc")
    return out


def parse_rate(text: str) -> tuple[int, float]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", text)
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected N/SECONDS, e.g. 10/30, not {text!r}")
    return int(m.group(1)), float(m.group(2))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the chosen port here (atomically)")
    p.add_argument("--token", default="fake-linode-token", help="the accepted bearer token")
    p.add_argument("--boot-delay", type=float, default=0.0,
                   help="seconds from create to 'running' (first half 'provisioning', "
                   "second half 'booting')")
    p.add_argument("--address-pool", default="",
                   help="comma list of public IPv4s to hand out: IP[/prefix][@gateway]")
    p.add_argument("--page-size", type=int, default=100,
                   help="default page_size of lists when the client sends none (Linode: "
                   "100); small values let tests paginate with few objects")
    p.add_argument("--create-rate-limit", type=parse_rate, default=(10, 30.0),
                   metavar="N/SECONDS", help="POST /linode/instances allowed per window "
                   "(Linode: 10/30); always enforced")
    p.add_argument("--enforce-rate-limits", action="store_true",
                   help="also answer 429 past 400 req/min, 200 list GETs/min, 20 GET "
                   "/images/min")
    p.add_argument("--boot-vms", action="store_true",
                   help="boot a fresh VM for every created instance (tests/fakes/freshvm.py)")
    p.add_argument("--spec", default=None, help="OpenAPI document (default: "
                   "shared/specs/linode-openapi.yaml beside the repo, or "
                   "$SFUCTL_LINODE_OPENAPI)")
    p.add_argument("--no-spec-cache", action="store_true",
                   help="always parse the YAML (~3 s) instead of the JSON cache")
    p.add_argument("--log-file", help="append every request log entry as a JSON line")
    p.add_argument("--max-log", type=int, default=20000)
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process goes away")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    a.address_pool = [x for x in a.address_pool.split(",") if x.strip()]
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the fake listens on loopback only")
    if a.page_size < 1:
        p.error("--page-size must be at least 1")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    fake = Fake(args)
    Handler.fake = fake
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"fake-linode listening on http://{args.host}:{port}/v4 "
          f"(spec {fake.validator.load_info['source']} in "
          f"{fake.validator.load_info['load_seconds']}s, ready in "
          f"{time.monotonic() - t0:.2f}s)", flush=True)

    def stop(*_):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_with_parent:
        ppid = os.getppid()

        def watch():
            while os.getppid() == ppid:
                time.sleep(0.5)
            stop()
        threading.Thread(target=watch, daemon=True).start()
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        if fake.vms is not None:
            fake.vms.destroy_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
