#!/usr/bin/env python3
"""Stateful fake of the DigitalOcean API v2 for sfuctl's tests.

Every request under /v2 is validated against the official OpenAPI document
(shared/specs/digitalocean-openapi.yaml) before it is served; a request the document
rejects is logged as a violation and answered 400 {"id":"fake_openapi_violation"}.
See README.md next to this file for flags and the /_fake control API.

Start:  /opt/sfuctl-testbed/venv/bin/python tests/fakes/digitalocean/server.py \
            --port 0 --port-file /tmp/do.port --token T --address-pool 10.200.101.2
"""

from __future__ import annotations

import argparse
import collections
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

from do_openapi import OpenAPIValidator  # noqa: E402  (exits with a clear message if deps are missing)
from state import ApiError, FakeState, all_images, all_regions, all_sizes, image_obj  # noqa: E402

RATE_LIMIT_HOUR = 5000
RATE_LIMIT_MINUTE = 250
KEYS_LIST_PER_MINUTE = 10

FAULT_BODIES = {
    429: ("too_many_requests", "API Rate limit exceeded."),
    500: ("server_error", "Server was unable to give you a response."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


class Fake:
    def __init__(self, args):
        self.args = args
        self.validator = OpenAPIValidator(args.spec, use_cache=not args.no_spec_cache)
        self.state = FakeState(args)
        self.lock = self.state.lock
        self.faults: list[dict] = []
        self._fault_ids = 0
        self.log: collections.deque = collections.deque(maxlen=args.max_log)
        self.seq = 0
        self.rate: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.keys_rate: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.log_file = open(args.log_file, "a", buffering=1) if args.log_file else None

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
    def rate_headers(self, token: str, now: float) -> dict:
        q = self.rate[token]
        while q and q[0] <= now - 3600:
            q.popleft()
        q.append(now)
        return {
            "ratelimit-limit": str(RATE_LIMIT_HOUR),
            "ratelimit-remaining": str(max(0, RATE_LIMIT_HOUR - len(q))),
            "ratelimit-reset": str(int(q[0] + 3600)),
        }

    def enforce_rate(self, token: str, now: float, method: str, path: str) -> ApiError | None:
        q = self.rate[token]
        if len(q) > RATE_LIMIT_HOUR:
            return ApiError(429, "too_many_requests", "API Rate limit exceeded.")
        recent = sum(1 for t in q if t > now - 60)
        if recent > RATE_LIMIT_MINUTE:
            oldest = next(t for t in q if t > now - 60)
            return ApiError(429, "too_many_requests", "API Rate limit exceeded.",
                            {"retry-after": str(max(1, int(oldest + 60 - now) + 1))})
        if method == "GET" and path == "/v2/account/keys":
            kq = self.keys_rate[token]
            while kq and kq[0] <= now - 60:
                kq.popleft()
            kq.append(now)
            if len(kq) > KEYS_LIST_PER_MINUTE:
                return ApiError(429, "too_many_requests", "API Rate limit exceeded.",
                                {"retry-after": str(max(1, int(kq[0] + 60 - now) + 1))})
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
        status = int(spec.get("status", 500))
        try:
            re.compile(spec.get("path_regex", ".*"))
        except re.error as e:
            raise ApiError(400, "bad_fault", f"path_regex: {e}")
        with self.lock:
            self._fault_ids += 1
            eid, emsg = FAULT_BODIES.get(status, ("fake_injected_fault",
                                                  f"injected HTTP {status}"))
            f = {
                "id": self._fault_ids,
                "method": str(spec.get("method", "*")).upper(),
                "path_regex": spec.get("path_regex", ".*"),
                "status": status,
                "remaining": int(spec.get("count", 1)),  # -1 = forever
                "skip": int(spec.get("skip", 0)),
                "retry_after": spec.get("retry_after"),
                "delay": float(spec.get("delay", 0)),
                "error_id": spec.get("error_id", eid),
                "message": spec.get("message", emsg),
                "hits": 0,
            }
            self.faults.append(f)
            return f


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sfuctl-fake-digitalocean/1"
    fake: Fake = None  # set at start-up

    def setup(self):
        super().setup()
        # one small response = headers + body in separate writes; without NODELAY,
        # Nagle + delayed ACK add ~40 ms to every request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet by default
        if self.fake.args.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    # all methods go through one dispatcher
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
        if body is not None or status == 204:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self._status = status

    def base_url(self) -> str:
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        return f"http://{host}"

    def dispatch(self) -> None:
        t0 = time.perf_counter()
        url = urlsplit(self.path)
        path, qs = url.path, url.query
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send(400, {"id": "bad_request", "message": "unreadable body"})
            return
        if path.startswith("/_fake/") or path == "/_fake":
            try:
                self.control(path, qs, body)
            except ApiError as e:
                self._send(e.status, {"id": e.err_id, "message": e.message})
            except Exception as e:  # keep the fake alive, report loudly
                self._send(500, {"id": "fake_internal_error", "message": repr(e)})
            return
        self.api(path, qs, body, t0)

    # ------------------------------------------------------------------ DO API
    def api(self, path: str, qs: str, raw: bytes, t0: float) -> None:
        fake = self.fake
        request_id = str(uuid.uuid4())
        vr = fake.validator.validate_request(self.command, path, qs, dict(self.headers), raw)
        auth = self.headers.get("Authorization", "")
        token_ok = auth == f"Bearer {fake.args.token}"
        token = auth[7:] if auth.startswith("Bearer ") else ""
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
            entry["body"] = vr.body
        elif raw:
            entry["body_raw"] = raw[:4096].decode("utf-8", "replace")
        headers = {"x-request-id": request_id}
        status, resp = 500, None
        try:
            with fake.lock:
                fake.state.tick(now)
                headers.update(fake.rate_headers(token or "-", now))
            if not vr.ok:
                status, resp = 400, {"id": "fake_openapi_violation",
                                     "message": vr.message, "request_id": request_id}
            elif not token_ok:
                status, resp = 401, {"id": "unauthorized",
                                     "message": "Unable to authenticate you."}
            else:
                err = fake.enforce_rate(token, now, self.command, path) \
                    if fake.args.enforce_rate_limits else None
                if err:
                    raise err
                fault = fake.take_fault(self.command, path)
                if fault:
                    entry["fault"] = {"id": fault["id"], "status": fault["status"]}
                    if fault["delay"]:
                        time.sleep(fault["delay"])
                    h = {}
                    if fault["retry_after"] is not None:
                        h["retry-after"] = str(fault["retry_after"])
                    if fault["status"] == 429:
                        h["ratelimit-remaining"] = "0"
                    raise ApiError(fault["status"], fault["error_id"], fault["message"], h)
                with fake.lock:
                    status, resp, extra = self.route(vr, path)
                headers.update(extra)
        except ApiError as e:
            status = e.status
            resp = {"id": e.err_id, "message": e.message, "request_id": request_id}
            headers.update(e.headers)
        except Exception as e:  # a bug in the fake: make it visible
            status, resp = 500, {"id": "fake_internal_error", "message": repr(e),
                                 "request_id": request_id}
        entry["status"] = status
        entry["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        # Logged before the answer leaves: a client that reads /_fake/requests right after its own request must
        # find it there (recording after the send raced such reads under load).
        fake.record(entry)
        self._send(status, resp, headers)

    def route(self, vr, path: str):
        """Returns (status, body, headers). Called with the state lock held."""
        st = self.fake.state
        op = vr.operation_id
        b = vr.body if isinstance(vr.body, dict) else {}
        pp, q = vr.path_params, vr.query
        base = self.base_url()

        def page(key, items, conv):
            return 200, self.paginate(key, [conv(x) for x in items], q, path, base), {}

        if op == "account_get":
            return 200, {"account": st.account()}, {}
        if op == "sshKeys_list":
            return page("ssh_keys", list(st.keys.values()), st.key_view)
        if op == "sshKeys_create":
            return 201, {"ssh_key": st.key_view(st.create_key(b))}, {}
        if op == "sshKeys_get":
            return 200, {"ssh_key": st.key_view(st.find_key(pp["ssh_key_identifier"]))}, {}
        if op == "sshKeys_update":
            k = st.find_key(pp["ssh_key_identifier"])
            if b.get("name"):
                k["name"] = b["name"]
            return 200, {"ssh_key": st.key_view(k)}, {}
        if op == "sshKeys_delete":
            k = st.find_key(pp["ssh_key_identifier"])
            del st.keys[k["id"]]
            return 204, None, {}
        if op == "droplets_list":
            if q.get("type") == "gpus":
                return page("droplets", [], st.droplet_view)
            return page("droplets", st.list_droplets(q.get("tag_name"), q.get("name")),
                        st.droplet_view)
        if op == "droplets_create":
            if not b:
                raise ApiError(422, "unprocessable_entity", "Request body is required.")
            created, actions = st.create_droplets(b, base)
            if "names" in b:
                return 202, {"droplets": [st.droplet_view(d) for d in created],
                             "links": {"actions": actions}}, {}
            return 202, {"droplet": st.droplet_view(created[0]),
                         "links": {"actions": actions}}, {}
        if op == "droplets_get":
            return 200, {"droplet": st.droplet_view(st.get_droplet(pp["droplet_id"]))}, {}
        if op == "droplets_destroy":
            st.delete_droplet(pp["droplet_id"])
            return 204, None, {}
        if op == "droplets_destroy_byTag":
            st.delete_by_tag(q["tag_name"])
            return 204, None, {}
        if op == "droplets_list_firewalls":
            return page("firewalls", st.droplet_firewalls(pp["droplet_id"]), st.fw_view)
        if op == "actions_get":
            return 200, {"action": dict(st.get_action(pp["action_id"]))}, {}
        if op == "firewalls_list":
            return page("firewalls", list(st.firewalls.values()), st.fw_view)
        if op == "firewalls_create":
            return 202, {"firewall": st.fw_view(st.create_firewall(b))}, {}
        if op == "firewalls_get":
            return 200, {"firewall": st.fw_view(st.get_firewall(pp["firewall_id"]))}, {}
        if op == "firewalls_update":
            return 200, {"firewall": st.fw_view(
                st.replace_firewall(pp["firewall_id"], b))}, {}
        if op == "firewalls_delete":
            st.delete_firewall(pp["firewall_id"])
            return 204, None, {}
        if op in ("firewalls_assign_droplets", "firewalls_delete_droplets"):
            st.fw_droplets(pp["firewall_id"], b.get("droplet_ids") or [],
                           op == "firewalls_assign_droplets")
            return 204, None, {}
        if op in ("firewalls_add_tags", "firewalls_delete_tags"):
            st.fw_tags(pp["firewall_id"], b.get("tags") or [], op == "firewalls_add_tags")
            return 204, None, {}
        if op in ("firewalls_add_rules", "firewalls_delete_rules"):
            st.fw_rules(pp["firewall_id"], b, op == "firewalls_add_rules")
            return 204, None, {}
        if op == "tags_list":
            return page("tags", list(st.tags), lambda n: st.tag_view(n, base))
        if op == "tags_create":
            name = b.get("name")
            if not name:
                raise ApiError(422, "unprocessable_entity", "name is required")
            st.ensure_tag(name)
            return 201, {"tag": st.tag_view(name, base)}, {}
        if op == "tags_get":
            if pp["tag_id"] not in st.tags:
                raise ApiError(404, "not_found",
                               "The resource you were accessing could not be found.")
            return 200, {"tag": st.tag_view(pp["tag_id"], base)}, {}
        if op == "tags_delete":
            st.delete_tag(pp["tag_id"])
            return 204, None, {}
        if op == "regions_list":
            return page("regions", all_regions(), lambda x: x)
        if op == "sizes_list":
            return page("sizes", all_sizes(), lambda x: x)
        if op == "images_list":
            # The public catalog: every image here is a distribution image (there are no private ones).
            if q.get("type") == "application" or q.get("private") == "true":
                return page("images", [], lambda x: x)
            return page("images", all_images(), lambda x: x)
        if op == "images_get":
            key = pp["image_id"]
            image = image_obj(int(key) if str(key).isdigit() else key)
            if image is None:
                raise ApiError(404, "not_found", "The resource you were accessing could not be found.")
            return 200, {"image": image}, {}
        raise ApiError(501, "fake_not_implemented",
                       f"the fake does not implement {op} ({self.command} {path}); "
                       "it is valid per the OpenAPI document")

    def paginate(self, key: str, items: list, q: dict, path: str, base: str) -> dict:
        per_page = int(q.get("per_page") or 20)
        page = int(q.get("page") or 1)
        total = len(items)
        last = max(1, (total + per_page - 1) // per_page)
        chunk = items[(page - 1) * per_page: page * per_page]
        out = {key: chunk}
        extra = [(k, v) for k, v in parse_qs(urlsplit(self.path).query).items()
                 if k not in ("page", "per_page")]

        def link(p):
            parts = [f"page={p}"] + [f"{k}={v[-1]}" for k, v in extra]
            if "per_page" in q:
                parts.append(f"per_page={per_page}")
            return f"{base}{path}?" + "&".join(parts)

        pages = {}
        if page > 1:
            pages["first"] = link(1)
            pages["prev"] = link(min(page - 1, last))
        if page < last:
            pages["last"] = link(last)
            pages["next"] = link(page + 1)
        style = self.fake.args.single_page_links
        if pages:
            out["links"] = {"pages": pages}
        elif style == "empty":
            out["links"] = {}
        elif style == "empty-pages":
            out["links"] = {"pages": {}}
        out["meta"] = {"total": total}
        return out

    # ------------------------------------------------------------------ control API
    def control(self, path: str, qs: str, raw: bytes) -> None:
        fake = self.fake
        m = self.command
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise ApiError(400, "bad_request", f"control body is not JSON: {e}")
        q = {k: v[-1] for k, v in parse_qs(qs).items()}
        with fake.lock:
            fake.state.tick()
            if path == "/_fake/health":
                return self._send(200, {"ok": True, "spec": fake.validator.load_info,
                                        "validator_init_seconds": fake.validator.init_seconds})
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
                    raise ApiError(400, "bad_request", f"bad address: {e}")
                return self._send(200, fake.state.pool_view())
            if path == "/_fake/config" and m == "POST":
                if "boot_delay" in body:
                    fake.state.boot_delay = float(body["boot_delay"])
                if "firewall_delay" in body:
                    fake.state.firewall_delay = float(body["firewall_delay"])
                return self._send(200, fake.state.dump()["config"])
            if path == "/_fake/reset" and m == "POST":
                fake.state.reset(body.get("address_pool"))
                fake.faults.clear()
                fake.log.clear()
                fake.rate.clear()
                fake.keys_rate.clear()
                if "boot_delay" in body:
                    fake.state.boot_delay = float(body["boot_delay"])
                if "firewall_delay" in body:
                    fake.state.firewall_delay = float(body["firewall_delay"])
                return self._send(200, {"ok": True})
        raise ApiError(404, "not_found", f"no control endpoint {m} {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the chosen port here (atomically)")
    p.add_argument("--token", default="fake-do-token", help="the accepted bearer token")
    p.add_argument("--boot-delay", type=float, default=0.0,
                   help="seconds a droplet stays 'new' before it is 'active'")
    p.add_argument("--firewall-delay", type=float, default=0.0,
                   help="seconds a firewall change stays 'waiting'")
    p.add_argument("--address-pool", default="",
                   help="comma list of public IPv4s to hand out: IP[/prefix][@gateway]")
    p.add_argument("--droplet-limit", type=int, default=100)
    p.add_argument("--single-page-links", choices=["empty", "absent", "empty-pages"],
                   default="empty", help="what 'links' looks like when a list fits one "
                   "page: {} (default), no key at all, or {\"pages\":{}}")
    p.add_argument("--enforce-rate-limits", action="store_true",
                   help="answer 429 past 250 req/min, 5000 req/h, 10 GET keys/min")
    p.add_argument("--spec", default=None, help="OpenAPI document (default: "
                   "shared/specs/digitalocean-openapi.yaml beside the repo, or "
                   "$SFUCTL_DO_OPENAPI)")
    p.add_argument("--no-spec-cache", action="store_true",
                   help="always parse the YAML (~2 s) instead of the JSON cache")
    p.add_argument("--log-file", help="append every request log entry as a JSON line")
    p.add_argument("--max-log", type=int, default=20000)
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process goes away")
    p.add_argument("--boot-vms", action="store_true",
                   help="boot a fresh VM (scripts/testbed/vm) for every droplet with the user_data and ssh_keys "
                   "of the create, login root; its address is the droplet's public IPv4 (not the pool's); "
                   "deleting the droplet destroys it. Needs root and scripts/testbed/install")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    a.address_pool = [x for x in a.address_pool.split(",") if x.strip()]
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the fake listens on loopback only")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    fake = Fake(args)
    if args.boot_vms:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from freshvm import FreshVms, prerequisites_missing
        why = prerequisites_missing()
        if why:
            print(f"fake-digitalocean: --boot-vms: {why}", file=sys.stderr)
            return 2
        fake.state.vms = FreshVms()
    Handler.fake = fake
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"fake-digitalocean listening on http://{args.host}:{port} "
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
        if fake.state.vms is not None:
            fake.state.vms.destroy_all()   # the fake's exit takes its VMs with it
    return 0


if __name__ == "__main__":
    sys.exit(main())
