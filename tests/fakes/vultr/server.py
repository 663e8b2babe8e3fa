#!/usr/bin/env python3
"""Stateful fake of the Vultr API v2 for sfuctl's tests.

Every request under /v2 is validated against the Vultr OpenAPI document
(shared/specs/vultr-openapi.json, patched in memory only where shared/specs/README.md
lists a defect) plus the rules the document states only in prose; a request that fails
is logged as a violation and answered 400 {"error": "...", "status": 400}.
See README.md next to this file for flags and the /_fake control API.

Start:  /opt/sfuctl-testbed/venv/bin/python tests/fakes/vultr/server.py \
            --port 0 --port-file /tmp/vultr.port --api-key K --address-pool 10.200.101.2
"""

from __future__ import annotations

import argparse
import collections
import importlib
import inspect
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vultr_openapi  # noqa: E402  (exits with a clear message if deps are missing)
from state import (ApiError, FakeState, OS_LIST, REGIONS, all_plans,  # noqa: E402
                   os_obj, plan_obj, region_obj)

API_PREFIX = "/v2"
FAULT_MESSAGES = {
    429: "rate limit exceeded",
    500: "Internal server error.",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Fake:
    def __init__(self, args):
        self.args = args
        self.validator = vultr_openapi.load_validator(args.spec)
        self.state = FakeState(args)
        self.lock = self.state.lock
        self.faults: list[dict] = []
        self._fault_ids = 0
        self.log: collections.deque = collections.deque(maxlen=args.max_log)
        self.seq = 0
        self.rate: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.log_file = open(args.log_file, "a", buffering=1) if args.log_file else None
        self._vms = None
        self.vm_errors: list[str] = []

    # ------------------------------------------------------------------ fresh VMs
    def vms(self):
        """The FreshVms instance (imported only with --boot-vms)."""
        if self._vms is None:
            mod = importlib.import_module(self.args.freshvm_module)
            self._vms = mod.FreshVms(owner_pid=os.getpid())
        return self._vms

    # ------------------------------------------------------------------ logging
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

    # ------------------------------------------------------------------ rate limit
    def rate_check(self, ip: str, now: float) -> ApiError | None:
        """Sliding one-second window per source IP (Vultr: 30 requests/s per IP)."""
        with self.lock:
            q = self.rate[ip]
            while q and q[0] <= now - 1.0:
                q.popleft()
            q.append(now)
            if self.args.enforce_rate_limits and len(q) > self.args.rate_limit:
                return ApiError(429, "rate limit exceeded", {"Retry-After": "1"})
        return None

    # ------------------------------------------------------------------ faults
    def take_fault(self, method: str, path: str) -> dict | None:
        with self.lock:
            for f in self.faults:
                if f["remaining"] == 0:
                    continue
                if f["method"] not in ("*", method):
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
        drop = bool(spec.get("drop", False))
        status = spec.get("status")
        if status is None and not drop and not spec.get("delay"):
            status = 500
        try:
            re.compile(spec.get("path_regex", ".*"))
        except re.error as e:
            raise ApiError(400, f"path_regex: {e}")
        with self.lock:
            self._fault_ids += 1
            f = {
                "id": self._fault_ids,
                "method": str(spec.get("method", "*")).upper(),
                "path_regex": spec.get("path_regex", ".*"),
                "status": int(status) if status is not None else None,
                "drop": drop,
                "remaining": int(spec.get("count", 1)),  # -1 = forever
                "skip": int(spec.get("skip", 0)),
                "retry_after": spec.get("retry_after"),
                "delay": float(spec.get("delay", 0)),
                "message": spec.get("message") or FAULT_MESSAGES.get(
                    int(status) if status else 0, f"injected HTTP {status}"),
                "hits": 0,
            }
            self.faults.append(f)
            return f


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class DropConnection(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sfuctl-fake-vultr/1"
    fake: Fake = None  # set at start-up

    def setup(self):
        super().setup()
        # headers and body go out in separate writes; without NODELAY, Nagle + delayed
        # ACK add ~40 ms to every request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet by default
        if self.fake.args.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
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

    def _drop(self) -> None:
        """Close the connection without an answer (a dropped/reset connection)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def dispatch(self) -> None:
        t0 = time.perf_counter()
        url = urlsplit(self.path)
        path, qs = url.path, url.query
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(400, {"error": "unreadable body", "status": 400})
            return
        if path.startswith("/_fake/") or path == "/_fake":
            try:
                self.control(path, qs, body)
            except ApiError as e:
                self._send(e.status, e.body())
            except Exception as e:  # keep the fake alive, report loudly
                self._send(500, {"error": f"fake internal error: {e!r}", "status": 500})
            return
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            self._send(404, {"error": f"fake: no route {path} (the API is under "
                                      f"{API_PREFIX})", "status": 404})
            return
        self.api(path, qs, body, t0)

    # ------------------------------------------------------------------ Vultr API
    def api(self, path: str, qs: str, raw: bytes, t0: float) -> None:
        fake = self.fake
        rel = path[len(API_PREFIX):] or "/"
        vr = fake.validator.validate_request(self.command, rel, qs, dict(self.headers), raw)
        if not vr.errors and vr.operation_id:
            vr.errors.extend(vultr_openapi.prose_checks(vr.operation_id, vr.body, vr.query))
            vr.ok = not vr.errors
        op = None
        if vr.template:
            op = fake.validator.find(self.command, rel)[0]
        security = (op.op.get("security", fake.validator.doc.get("security", []))
                    if op else [{}])
        public = security == []
        auth = self.headers.get("Authorization", "")
        key_ok = auth == f"Bearer {fake.args.api_key}"
        now = time.time()
        entry = {
            "time": now, "method": self.command, "path": path, "query": qs,
            "operation_id": vr.operation_id, "valid": vr.ok,
            "validation_error": vr.message or None, "validation_errors": vr.errors,
            "warnings": vr.warnings, "validation_ms": round(vr.seconds * 1000, 3),
            "auth_ok": key_ok or public, "fault": None, "client": self.client_address[0],
            "oob": bool(self.headers.get("X-Fake-Oob")),
        }
        if vr.body is not None:
            entry["body"] = vr.body
        elif raw:
            entry["body_raw"] = raw[:4096].decode("utf-8", "replace")
        headers: dict = {}
        status, resp = 500, None
        post_actions: list = []
        try:
            if not vr.ok:
                raise ApiError(400, "openapi violation: " + vr.message)
            if not (key_ok or public):
                raise ApiError(401, "Invalid API token.")
            err = fake.rate_check(self.client_address[0], now)
            if err:
                raise err
            fault = fake.take_fault(self.command, path)
            if fault:
                entry["fault"] = {"id": fault["id"], "status": fault["status"],
                                  "drop": fault["drop"], "delay": fault["delay"]}
                if fault["delay"]:
                    time.sleep(fault["delay"])
                if fault["drop"]:
                    raise DropConnection()
                if fault["status"] is not None:
                    h = {}
                    if fault["retry_after"] is not None:
                        h["Retry-After"] = str(fault["retry_after"])
                    raise ApiError(fault["status"], fault["message"], h)
            status, resp, extra, post_actions = self.route(vr, rel)
            headers.update(extra)
        except DropConnection:
            entry["status"] = None
            entry["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            fake.record(entry)
            self._drop()
            return
        except ApiError as e:
            status, resp = e.status, e.body()
            headers.update(e.headers)
        except Exception as e:  # a bug in the fake: make it visible
            status, resp = 500, {"error": f"fake internal error: {e!r}", "status": 500}
        entry["status"] = status
        entry["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        # Logged before the answer leaves, so a client reading /_fake/requests right after its call finds it.
        fake.record(entry)
        self._send(status, resp, headers)
        for action in post_actions:
            action()

    def route(self, vr, rel: str):
        """Returns (status, body, headers, post-response actions)."""
        fake = self.fake
        st = fake.state
        op = vr.operation_id
        b = vr.body if isinstance(vr.body, dict) else {}
        pp, q = vr.path_params, vr.query

        def page(key, items):
            return 200, paginate(key, items, q), {}, []

        # --- catalog (public) ---------------------------------------------------------
        if op == "list-regions":
            return page("regions", [(i, region_obj(r[0])) for i, r in enumerate(REGIONS)])
        if op == "list-available-plans-region":
            if pp["region-id"] not in [r[0] for r in REGIONS]:
                raise ApiError(404, "Invalid region.")
            plans = [p["id"] for p in all_plans(q.get("type"))
                     if pp["region-id"] in p["locations"]]
            return 200, {"available_plans": plans}, {}, []
        if op == "list-plans":
            return page("plans", list(enumerate(all_plans(q.get("type")))))
        if op == "list-os":
            return page("os", [(o[0], os_obj(o[0])) for o in OS_LIST])

        with fake.lock:
            # --- ssh keys -------------------------------------------------------------
            if op == "list-ssh-keys":
                return page("ssh_keys", [(k["seq"], st.key_view(k))
                                         for k in st.keys.values()])
            if op == "create-ssh-key":
                return 201, {"ssh_key": st.key_view(st.create_key(b))}, {}, []
            if op == "get-ssh-key":
                return 200, {"ssh_key": st.key_view(st.get_key(pp["ssh-key-id"]))}, {}, []
            if op == "update-ssh-key":
                st.update_key(pp["ssh-key-id"], b)
                return 204, None, {}, []
            if op == "delete-ssh-key":
                st.get_key(pp["ssh-key-id"])
                del st.keys[pp["ssh-key-id"]]
                return 204, None, {}, []
            # --- firewall groups and rules --------------------------------------------
            if op == "list-firewall-groups":
                return page("firewall_groups", [(g["seq"], st.group_view(g))
                                                for g in st.groups.values()])
            if op == "create-firewall-group":
                return 201, {"firewall_group": st.group_view(st.create_group(b))}, {}, []
            if op == "get-firewall-group":
                g = st.get_group(pp["firewall-group-id"])
                return 200, {"firewall_group": st.group_view(g)}, {}, []
            if op == "update-firewall-group":
                st.update_group(pp["firewall-group-id"], b)
                return 204, None, {}, []
            if op == "delete-firewall-group":
                st.delete_group(pp["firewall-group-id"])
                return 204, None, {}, []
            if op == "list-firewall-group-rules":
                g = st.get_group(pp["firewall-group-id"])
                return page("firewall_rules", [(r["id"], st.rule_view(r))
                                               for r in g["rules"].values()])
            if op == "post-firewalls-firewall-group-id-rules":
                r = st.create_rule(pp["firewall-group-id"], b)
                return 201, {"firewall_rule": st.rule_view(r)}, {}, []
            if op == "get-firewall-group-rule":
                r = st.get_rule(pp["firewall-group-id"], pp["firewall-rule-id"])
                return 200, {"firewall_rule": st.rule_view(r)}, {}, []
            if op == "delete-firewall-group-rule":
                st.delete_rule(pp["firewall-group-id"], pp["firewall-rule-id"])
                return 204, None, {}, []
            # --- instances ------------------------------------------------------------
            if op == "list-instances":
                charges = q.get("show_pending_charges") is True
                items = [(i["seq"], st.instance_view(i, pending_charges=charges))
                         for i in st.list_instances(q)]
                return page("instances", items)
            if op == "get-instance":
                inst = st.get_instance(pp["instance-id"])
                return 200, {"instance": st.instance_view(inst)}, {}, []
            if op == "update-instance":
                inst = st.update_instance(pp["instance-id"], b)
                return 202, {"instance": st.instance_view(inst)}, {}, []
            if op == "delete-instance":
                inst = st.delete_instance(pp["instance-id"])
                post = []
                if inst["_vm"]:
                    post.append(lambda: self.destroy_vm(vm_name(inst["id"])))
                return 204, None, {}, post
            if op == "create-instance":
                chk = st.check_create(b)
                if not fake.args.boot_vms:
                    inst = st.create_instance(b, chk)
                    return 202, {"instance": st.instance_view(
                        inst, with_password=True, at_create=True)}, {}, []
                keys = [st.keys[k]["ssh_key"] for k in chk["keys"]]
        if op == "create-instance":  # --boot-vms: boot outside the state lock
            iid = str(uuid.uuid4())
            kw = {}
            if "hostname" in inspect.signature(fake.vms().boot).parameters:
                kw["hostname"] = b.get("hostname") or "vultr-guest"
            try:
                ip = fake.vms().boot(vm_name(iid), chk["user_data"], keys, "root", **kw)
            except Exception as e:
                raise ApiError(500, f"fake: booting a fresh VM failed: {e!r}")
            with fake.lock:
                inst = st.create_instance(b, chk, iid=iid, vm_ip=ip)
                return 202, {"instance": st.instance_view(
                    inst, with_password=True, at_create=True)}, {}, []
        raise ApiError(501, f"fake: {op} ({self.command} {API_PREFIX}{rel}) is not "
                            "implemented; the request is valid per the OpenAPI document")

    def destroy_vm(self, name: str) -> None:
        try:
            self.fake.vms().destroy(name)
        except Exception as e:  # reported in /_fake/state, never fatal
            self.fake.vm_errors.append(f"destroy {name}: {e!r}")

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
            if path == "/_fake/health":
                return self._send(200, {"ok": True, "spec": fake.validator.load_info,
                                        "validator_init_seconds": fake.validator.init_seconds})
            if path == "/_fake/state" and m == "GET":
                d = fake.state.dump()
                d["vm_errors"] = list(fake.vm_errors)
                return self._send(200, d)
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
                    raise ApiError(400, f"bad address: {e}")
                return self._send(200, fake.state.pool_view())
            if path == "/_fake/config" and m == "POST":
                self._config(body)
                return self._send(200, fake.state.dump()["config"])
            if path == "/_fake/reset" and m == "POST":
                vms = [vm_name(i["id"]) for i in fake.state.instances.values() if i["_vm"]]
                fake.state.reset(body.get("address_pool"))
                fake.faults.clear()
                fake.log.clear()
                fake.rate.clear()
                self._config(body)
                self._send(200, {"ok": True})
                for name in vms:
                    self.destroy_vm(name)
                return
        raise ApiError(404, f"no control endpoint {m} {path}")

    def _config(self, body: dict) -> None:
        st = self.fake.state
        for k in ("boot_delay", "lock_delay", "install_delay"):
            if k in body:
                setattr(st, k, float(body[k]))
        if "max_rule_count" in body:
            st.max_rule_count = int(body["max_rule_count"])
        if "enforce_rate_limits" in body:
            self.fake.args.enforce_rate_limits = bool(body["enforce_rate_limits"])


def vm_name(iid: str) -> str:
    return f"vultr-{iid[:8]}"


def paginate(key: str, items: list[tuple], q: dict) -> dict:
    """Vultr cursor pagination. `items` are (sort key, object) pairs. Cursors are opaque
    base64 strings (like Vultr's "bmV4dF9f..." = "next__..."); meta.links.next/prev are
    "" when there is no such page."""
    import base64
    items = sorted(items, key=lambda x: x[0])
    per_page = q.get("per_page") or 100
    cursor = q.get("cursor") or ""
    start = 0
    if cursor:
        try:
            kind, _, val = base64.b64decode(cursor, validate=True).decode().partition("__")
            val_n = int(val)
            if kind not in ("next", "prev"):
                raise ValueError(kind)
        except ValueError:
            raise ApiError(400, "Invalid cursor.")
        if kind == "next":
            start = next((i for i, (k, _) in enumerate(items) if k >= val_n), len(items))
        else:
            end = next((i for i, (k, _) in enumerate(items) if k >= val_n), len(items))
            start = max(0, end - per_page)
    chunk = items[start:start + per_page]

    def enc(kind, k):
        return base64.b64encode(f"{kind}__{k}".encode()).decode()

    nxt = enc("next", items[start + per_page][0]) if start + per_page < len(items) else ""
    prev = enc("prev", items[start][0]) if start > 0 and chunk else ""
    return {key: [obj for _, obj in chunk],
            "meta": {"total": len(items), "links": {"next": nxt, "prev": prev}}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the chosen port here (atomically)")
    p.add_argument("--api-key", default="fake-vultr-key", help="the accepted bearer key")
    p.add_argument("--address-pool", default="",
                   help="comma list of public IPv4s to hand out: IP[/prefix][@gateway]")
    p.add_argument("--boot-delay", type=float, default=0.0,
                   help="seconds an instance stays pending with main_ip 0.0.0.0")
    p.add_argument("--lock-delay", type=float, default=0.0,
                   help="seconds after create during which DELETE answers 500 "
                        "'Server is currently locked'")
    p.add_argument("--install-delay", type=float, default=0.0,
                   help="seconds server_status stays 'installingbooting' after active")
    p.add_argument("--max-rule-count", type=int, default=50,
                   help="max_rule_count of new firewall groups")
    p.add_argument("--enforce-rate-limits", action="store_true",
                   help="answer 429 (Retry-After: 1) past --rate-limit requests/s per IP")
    p.add_argument("--rate-limit", type=int, default=30, help="requests per second per IP")
    p.add_argument("--boot-vms", action="store_true",
                   help="boot a fresh VM for each instance (tests/fakes/freshvm.py)")
    p.add_argument("--freshvm-module", default="freshvm",
                   help="module providing FreshVms (tests may point this at a mock)")
    p.add_argument("--spec", default=None, help="OpenAPI document (default: "
                   "shared/specs/vultr-openapi.json beside the repo, or "
                   "$SFUCTL_VULTR_OPENAPI, or /work/shared/specs/)")
    p.add_argument("--log-file", help="append every request log entry as a JSON line")
    p.add_argument("--max-log", type=int, default=20000)
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process goes away")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    a.address_pool = [x for x in a.address_pool.split(",") if x.strip()]
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the fake listens on loopback only")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    # tests/fakes (where freshvm.py lives) is on sys.path via vultr_openapi; a test can
    # name a mock module with --freshvm-module (found through PYTHONPATH)
    fake = Fake(args)
    if args.boot_vms:
        fake.vms()  # fail at start, not at the first create, if the module is missing
    Handler.fake = fake
    ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in args.host \
        else socket.AF_INET
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    info = fake.validator.load_info
    print(f"fake-vultr listening on http://{args.host}:{port}{API_PREFIX} "
          f"(spec {info['path']} in {info['load_seconds']}s, "
          f"{sum(1 for v in info['patches'].values() if v)} patches, ready in "
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
        httpd.serve_forever(poll_interval=0.1)
    finally:
        httpd.server_close()
        if fake._vms is not None:
            try:
                fake._vms.destroy_all()
            except Exception as e:
                print(f"fake-vultr: destroy_all failed: {e!r}", file=sys.stderr)
        if fake.log_file:
            fake.log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
