"""Self-tests of the DigitalOcean fake.

Run:  /opt/sfuctl-testbed/venv/bin/python -m pytest tests/fakes -q
Every response the fake gives is validated against the response schemas of the
official OpenAPI document (OAS30ReadValidator), so the fake cannot drift from DO.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from do_openapi import OpenAPIValidator  # noqa: E402

TOKEN = "test-token-123"
POOL = ["10.200.101.2", "10.200.102.2"]


@pytest.fixture(scope="session")
def spec() -> OpenAPIValidator:
    return OpenAPIValidator()


class Client:
    def __init__(self, port: int, spec: OpenAPIValidator):
        self.port = port
        self.spec = spec
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def raw(self, method, path, body=None, token=TOKEN, headers=None, raw_body=None):
        h = {"Content-Type": "application/json"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        data = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers=h)
        r = self.conn.getresponse()
        payload = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload

    def call(self, method, path, body=None, expect=None, **kw):
        status, headers, payload = self.raw(method, path, body, **kw)
        if path.startswith("/v2"):
            # every DO response: rate-limit headers + matches the document
            for h in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
                assert h in headers, (h, method, path, status)
            p = path.split("?")[0]
            # the 400 fake_openapi_violation answer is the fake's own, not a DO response
            own = status == 400 and b"fake_openapi_violation" in payload
            if self.spec.find(method, p)[0] is not None and not own:
                errs = self.spec.validate_response(method, p, status, headers, payload)
                assert not errs, f"{method} {path} -> {status}: response drifts from spec: {errs}"
        data = json.loads(payload) if payload else None
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {data}"
        return status, headers, data

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.call("DELETE", path, body, **kw)

    def ctl(self, method, path, body=None):
        status, _, data = self.call(method, "/_fake/" + path, body)
        assert status == 200, (path, data)
        return data


@pytest.fixture(scope="module")
def fake_proc():
    tmp = tempfile.mkdtemp(prefix="do-fake-")
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "fake.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py"), "--port", "0",
         "--port-file", port_file, "--token", TOKEN,
         "--address-pool", ",".join(POOL), "--exit-with-parent"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        while not os.path.exists(port_file):
            assert proc.poll() is None, open(os.path.join(tmp, "fake.log")).read()
            assert time.monotonic() - t0 < 20, "fake did not start"
            time.sleep(0.02)
        port = int(open(port_file).read())
        print(f"fake started in {time.monotonic() - t0:.2f}s on port {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def c(fake_proc, spec):
    cl = Client(fake_proc, spec)
    cl.ctl("POST", "reset", {"address_pool": POOL, "boot_delay": 0, "firewall_delay": 0})
    yield cl
    cl.conn.close()


def make_pubkey(seed: bytes = b"k1") -> tuple[str, str]:
    keytype = b"ssh-ed25519"
    blob = (len(keytype).to_bytes(4, "big") + keytype + (32).to_bytes(4, "big")
            + hashlib.sha256(seed).digest())
    md5 = hashlib.md5(blob).hexdigest()
    return ("ssh-ed25519 " + base64.b64encode(blob).decode() + " test@sfuctl",
            ":".join(md5[i:i + 2] for i in range(0, 32, 2)))


DROPLET = {"name": "sfu-1", "region": "nyc3", "size": "s-1vcpu-1gb",
           "image": "ubuntu-24-04-x64"}
UDP_RULE = {"protocol": "udp", "ports": "40000-41000",
            "sources": {"addresses": ["0.0.0.0/0", "::/0"]}}
TCP_443 = {"protocol": "tcp", "ports": "443", "sources": {"addresses": ["0.0.0.0/0"]}}
ICMP = {"protocol": "icmp", "ports": "0", "sources": {"addresses": ["0.0.0.0/0"]}}


def wait_for(fn, timeout=5.0, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


# ----------------------------------------------------------------------------- tests
def test_auth_and_rate_limit_headers(c):
    st, h, body = c.get("/v2/account", token=None, expect=401)
    assert body == {"id": "unauthorized", "message": "Unable to authenticate you."}
    c.get("/v2/account", token="wrong", expect=401)
    st, h, body = c.get("/v2/account", expect=200)
    assert body["account"]["status"] == "active"
    assert int(h["ratelimit-limit"]) == 5000
    assert 0 < int(h["ratelimit-remaining"]) < 5000
    assert int(h["ratelimit-reset"]) > time.time()
    assert c.ctl("GET", "violations")["violations"] == []


def test_ssh_keys(c):
    pub, fp = make_pubkey()
    _, _, body = c.post("/v2/account/keys", {"name": "sfuctl", "public_key": pub}, expect=201)
    key = body["ssh_key"]
    assert key["fingerprint"] == fp
    if shutil.which("ssh-keygen"):  # cross-check with OpenSSH's own MD5 fingerprint
        with tempfile.NamedTemporaryFile("w", suffix=".pub") as f:
            f.write(pub + "\n")
            f.flush()
            out = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", f.name],
                                 capture_output=True, text=True).stdout
        assert f"MD5:{fp}" in out
    assert c.get(f"/v2/account/keys/{key['id']}", expect=200)[2]["ssh_key"] == key
    assert c.get(f"/v2/account/keys/{fp}", expect=200)[2]["ssh_key"] == key
    _, _, lst = c.get("/v2/account/keys", expect=200)
    assert lst["meta"]["total"] == 1 and "pages" not in lst.get("links", {})
    _, _, err = c.post("/v2/account/keys", {"name": "again", "public_key": pub}, expect=422)
    assert err["id"] == "unprocessable_entity"
    c.post("/v2/account/keys", {"name": "junk", "public_key": "ssh-ed25519 !!!"}, expect=422)
    c.delete(f"/v2/account/keys/{fp}", expect=204)
    _, _, err = c.get(f"/v2/account/keys/{key['id']}", expect=404)
    assert err["id"] == "not_found" and err["message"]
    assert c.ctl("GET", "violations")["violations"] == []


def test_droplet_boot_firewall_by_tag_and_addresses(c):
    c.ctl("POST", "config", {"boot_delay": 0.6, "firewall_delay": 0.2})
    pub, fp = make_pubkey(b"flow")
    kid = c.post("/v2/account/keys", {"name": "k", "public_key": pub}, expect=201)[2]["ssh_key"]["id"]
    c.post("/v2/tags", {"name": "sfu-demo"}, expect=201)
    _, _, fwb = c.post("/v2/firewalls", {
        "name": "sfu-demo-fw", "inbound_rules": [UDP_RULE, TCP_443, ICMP],
        "outbound_rules": [{"protocol": "tcp", "ports": "0",
                            "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}}],
        "tags": ["sfu-demo"]}, expect=202)
    fw = fwb["firewall"]
    assert fw["status"] == "waiting" and fw["tags"] == ["sfu-demo"] and fw["droplet_ids"] == []
    assert fw["inbound_rules"] == [UDP_RULE, TCP_443, ICMP]
    user_data = "#cloud-config\nruncmd:\n  - echo sfu\n"
    _, _, db = c.post("/v2/droplets", dict(DROPLET, tags=["sfu-demo", "role:sfu"],
                                           user_data=user_data, ipv6=True,
                                           ssh_keys=[kid, fp]), expect=202)
    d = db["droplet"]
    assert d["status"] == "new" and d["networks"] == {"v4": [], "v6": []}
    act = db["links"]["actions"][0]
    assert act["rel"] == "create" and act["href"].endswith(f"/v2/actions/{act['id']}")
    assert "role:sfu" in [t["name"] for t in c.get("/v2/tags")[2]["tags"]]  # auto-created
    # still booting
    assert c.get(f"/v2/droplets/{d['id']}")[2]["droplet"]["status"] == "new"
    assert c.get(f"/v2/actions/{act['id']}")[2]["action"]["status"] == "in-progress"
    fw_now = c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]
    assert fw_now["status"] == "waiting"
    assert fw_now["pending_changes"] == [
        {"droplet_id": d["id"], "removing": False, "status": "waiting"}]
    # boots, gets the first pool address
    active = wait_for(lambda: (lambda x: x if x["status"] == "active" else None)(
        c.get(f"/v2/droplets/{d['id']}")[2]["droplet"]))
    assert active, "droplet never became active"
    v4 = active["networks"]["v4"]
    assert v4 == [{"ip_address": POOL[0], "netmask": "255.255.255.0",
                   "gateway": "10.200.101.1", "type": "public"}]
    assert active["networks"]["v6"][0]["type"] == "public"
    assert c.get(f"/v2/actions/{act['id']}")[2]["action"]["status"] == "completed"
    fw_done = wait_for(lambda: (lambda x: x if x["status"] == "succeeded" else None)(
        c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]))
    assert fw_done and fw_done["pending_changes"] == []
    assert fw_done["droplet_ids"] == []  # attached by tag: DO lists only explicit ids
    fws = c.get(f"/v2/droplets/{d['id']}/firewalls")[2]["firewalls"]
    assert [f["id"] for f in fws] == [fw["id"]]
    state = c.ctl("GET", "state")
    sd = state["droplets"][0]
    assert sd["_fake"]["user_data"] == user_data and sd["_fake"]["ssh_key_ids"] == [kid, kid]
    assert state["address_pool"]["available"] == [POOL[1]]
    assert state["address_pool"]["in_use"] == {POOL[0]: d["id"]}
    assert c.ctl("GET", "violations")["violations"] == []


def test_pool_exhaustion_and_return(c):
    c.ctl("POST", "address-pool", {"addresses": ["10.200.101.2"], "replace": True})
    _, _, d1 = c.post("/v2/droplets", DROPLET, expect=202)
    _, _, err = c.post("/v2/droplets", dict(DROPLET, name="sfu-2"), expect=422)
    assert err["id"] == "unprocessable_entity" and "pool" in err["message"]
    assert len(c.ctl("GET", "state")["droplets"]) == 1  # nothing half-created
    c.delete(f"/v2/droplets/{d1['droplet']['id']}", expect=204)
    assert c.ctl("GET", "address-pool")["available"] == ["10.200.101.2"]
    _, _, d2 = c.post("/v2/droplets", dict(DROPLET, name="sfu-2"), expect=202)
    got = c.get(f"/v2/droplets/{d2['droplet']['id']}")[2]["droplet"]
    assert got["networks"]["v4"][0]["ip_address"] == "10.200.101.2"
    # control endpoint adds addresses (with explicit prefix and gateway)
    pool = c.ctl("POST", "address-pool", {"addresses": ["10.200.103.2/30@10.200.103.1"]})
    assert pool["available"] == ["10.200.103.2"]
    _, _, d3 = c.post("/v2/droplets", dict(DROPLET, name="sfu-3"), expect=202)
    got = c.get(f"/v2/droplets/{d3['droplet']['id']}")[2]["droplet"]["networks"]["v4"][0]
    assert got == {"ip_address": "10.200.103.2", "netmask": "255.255.255.252",
                   "gateway": "10.200.103.1", "type": "public"}


def test_pagination_and_tag_filter(c):
    addrs = [f"10.200.{200 + i}.2" for i in range(25)]
    c.ctl("POST", "address-pool", {"addresses": addrs, "replace": True})
    first = {k: v for k, v in DROPLET.items() if k != "name"}
    first.update(names=[f"a-{i}" for i in range(10)], tags=["batch-a"])
    c.post("/v2/droplets", first, expect=202)
    for batch in (range(10, 20), range(20, 25)):
        body = {k: v for k, v in DROPLET.items() if k != "name"}
        body.update(names=[f"b-{i}" for i in batch], tags=["batch-b"])
        _, _, r = c.post("/v2/droplets", body, expect=202)
        assert len(r["droplets"]) == len(batch) and len(r["links"]["actions"]) == len(batch)
    _, _, p1 = c.get("/v2/droplets", expect=200)
    assert len(p1["droplets"]) == 20 and p1["meta"]["total"] == 25
    nxt = p1["links"]["pages"]["next"]
    assert "page=2" in nxt and "prev" not in p1["links"]["pages"]
    assert p1["links"]["pages"]["last"] == nxt
    path2 = nxt.split(f"127.0.0.1:{c.port}", 1)[1]
    _, _, p2 = c.get(path2, expect=200)
    assert len(p2["droplets"]) == 5 and "next" not in p2["links"]["pages"]
    assert set(p2["links"]["pages"]) == {"first", "prev"}
    ids = [d["id"] for d in p1["droplets"] + p2["droplets"]]
    assert len(set(ids)) == 25
    _, _, big = c.get("/v2/droplets?per_page=200", expect=200)
    assert len(big["droplets"]) == 25 and "pages" not in big.get("links", {})
    _, _, small = c.get("/v2/droplets?per_page=10&page=2&tag_name=batch-b", expect=200)
    assert small["meta"]["total"] == 15 and len(small["droplets"]) == 5
    assert set(small["links"]["pages"]) == {"first", "prev"}  # page 2 of 2
    assert "tag_name=batch-b" in small["links"]["pages"]["prev"]
    assert "per_page=10" in small["links"]["pages"]["prev"]
    _, _, tagged = c.get("/v2/droplets?tag_name=batch-a&per_page=200", expect=200)
    assert {d["name"] for d in tagged["droplets"]} == {f"a-{i}" for i in range(10)}
    _, _, none = c.get("/v2/droplets?tag_name=nope", expect=200)
    assert none["droplets"] == [] and none["meta"]["total"] == 0
    assert c.ctl("GET", "address-pool")["available"] == []
    # delete all by tag: 204, addresses return to the pool
    c.delete("/v2/droplets?tag_name=batch-b", expect=204)
    c.delete("/v2/droplets?tag_name=batch-a", expect=204)
    assert c.get("/v2/droplets")[2]["meta"]["total"] == 0
    assert sorted(c.ctl("GET", "address-pool")["available"]) == sorted(addrs)
    c.delete("/v2/droplets?tag_name=never-existed", expect=404)
    assert c.ctl("GET", "violations")["violations"] == []


def test_firewall_put_is_full_replace(c):
    c.post("/v2/tags", {"name": "sfu"}, expect=201)
    d = c.post("/v2/droplets", DROPLET, expect=202)[2]["droplet"]
    fw = c.post("/v2/firewalls", {"name": "fw-1", "inbound_rules": [UDP_RULE, ICMP],
                                  "droplet_ids": [d["id"]], "tags": ["sfu"]},
                expect=202)[2]["firewall"]
    assert fw["droplet_ids"] == [d["id"]] and fw["tags"] == ["sfu"]
    assert fw["pending_changes"] == [{"droplet_id": d["id"], "removing": False,
                                      "status": "waiting"}]
    # PUT without droplet_ids/tags silently detaches everything (the real API's trap)
    put = c.put(f"/v2/firewalls/{fw['id']}", {"name": "fw-1", "inbound_rules": [TCP_443]},
                expect=200)[2]["firewall"]
    assert put["droplet_ids"] == [] and put["tags"] == []
    assert put["inbound_rules"] == [TCP_443] and put["outbound_rules"] == []
    assert put["pending_changes"] == [{"droplet_id": d["id"], "removing": True,
                                       "status": "waiting"}]
    assert c.get(f"/v2/droplets/{d['id']}/firewalls")[2]["firewalls"] == []
    # ICMP rules read back "0" whatever was sent
    c.post(f"/v2/firewalls/{fw['id']}/rules", {"inbound_rules": [
        {"protocol": "icmp", "ports": "8", "sources": {"addresses": ["10.0.0.0/8"]}}]},
        expect=204)
    rules = c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]["inbound_rules"]
    assert rules[-1] == {"protocol": "icmp", "ports": "0",
                         "sources": {"addresses": ["10.0.0.0/8"]}}
    # incremental endpoints
    c.post(f"/v2/firewalls/{fw['id']}/droplets", {"droplet_ids": [d["id"]]}, expect=204)
    c.post(f"/v2/firewalls/{fw['id']}/tags", {"tags": ["sfu"]}, expect=204)
    got = c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]
    assert got["droplet_ids"] == [d["id"]] and got["tags"] == ["sfu"]
    c.delete(f"/v2/firewalls/{fw['id']}/droplets", {"droplet_ids": [d["id"]]}, expect=204)
    c.delete(f"/v2/firewalls/{fw['id']}/tags", {"tags": ["sfu"]}, expect=204)
    c.delete(f"/v2/firewalls/{fw['id']}/rules", {"inbound_rules": [TCP_443]}, expect=204)
    got = c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]
    assert got["droplet_ids"] == [] and got["tags"] == [] and TCP_443 not in got["inbound_rules"]
    wait_for(lambda: c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall"]["status"] == "succeeded")
    # semantic errors: unknown tag, bad ports, bad address, duplicate name
    _, _, e = c.post("/v2/firewalls", {"name": "fw-2", "inbound_rules": [UDP_RULE],
                                       "tags": ["missing-tag"]}, expect=422)
    assert "missing-tag" in e["message"]
    c.post("/v2/firewalls", {"name": "fw-2", "inbound_rules": [dict(UDP_RULE, ports="all")]},
           expect=422)
    c.post("/v2/firewalls", {"name": "fw-2", "inbound_rules": [
        dict(UDP_RULE, sources={"addresses": ["not-an-ip"]})]}, expect=422)
    c.post("/v2/firewalls", {"name": "fw-1", "inbound_rules": [UDP_RULE]}, expect=409)
    _, _, lst = c.get("/v2/firewalls", expect=200)
    assert lst["meta"]["total"] == 1
    c.delete(f"/v2/firewalls/{fw['id']}", expect=204)
    c.get(f"/v2/firewalls/{fw['id']}", expect=404)
    c.delete("/v2/tags/sfu", expect=204)
    c.get("/v2/tags/sfu", expect=404)
    assert c.ctl("GET", "violations")["violations"] == []


def test_injected_faults_then_success(c):
    c.ctl("POST", "faults", {"method": "POST", "path_regex": "^/v2/droplets$",
                             "status": 429, "count": 2, "retry_after": 1})
    for _ in range(2):
        st, h, body = c.post("/v2/droplets", DROPLET, expect=429)
        assert h["retry-after"] == "1" and h["ratelimit-remaining"] == "0"
        assert body["id"] == "too_many_requests"
        assert body["message"] == "API Rate limit exceeded."
    c.post("/v2/droplets", DROPLET, expect=202)
    c.get("/v2/droplets", expect=200)  # GETs were never matched
    c.ctl("POST", "faults", [{"path_regex": "^/v2/account$", "status": 500},
                             {"path_regex": "^/v2/account$", "status": 503}])
    assert c.get("/v2/account", expect=500)[2]["id"] == "server_error"
    assert c.get("/v2/account", expect=503)[2]["id"] == "service_unavailable"
    c.get("/v2/account", expect=200)
    faults = c.ctl("GET", "faults")["faults"]
    assert [f["hits"] for f in faults] == [2, 1, 1]
    log = c.ctl("GET", "requests")["requests"]
    assert [e["status"] for e in log if e["path"] == "/v2/droplets"] == [429, 429, 202, 200]
    assert all(e["valid"] for e in log)


def test_spec_rejects_invalid_requests(c):
    bad = [
        ("POST", "/v2/firewalls", {"name": "fw", "inbound_rules": [
            dict(UDP_RULE, ports=40000)]}, "40000 is not of type 'string'"),
        ("POST", "/v2/droplets", {k: v for k, v in DROPLET.items() if k != "size"},
         "'size' is a required property"),
        ("POST", "/v2/firewalls", {"name": "fw", "inbound_rules": [
            dict(UDP_RULE, protocol="UDP")]}, "'UDP' is not one of"),
        ("POST", "/v2/droplets", dict(DROPLET, name="bad name!"), "does not match"),
        ("POST", "/v2/firewalls", {"name": "fw"}, "inbound_rules"),  # needs a rule list
        ("GET", "/v2/droplets?per_page=500", None, "maximum of 200"),
        ("GET", "/v2/droplets/abc", None, "not of type 'integer'"),
        ("GET", "/v2/firewalls/not-a-uuid", None, "uuid"),
        ("DELETE", "/v2/droplets", None, "'tag_name' is required"),
        ("GET", "/v2/droplet", None, "no path in the OpenAPI document"),
        ("PATCH", "/v2/droplets", {}, "PATCH is not defined"),
        ("POST", "/v2/account/keys", None, "request body is required"),
        ("PUT", "/v2/firewalls/0b1b8f4e-1111-4222-8333-944445555666",
         {"name": "fw", "id": "x", "inbound_rules": [UDP_RULE]}, "read-only"),
    ]
    for method, path, body, needle in bad:
        st, h, data = c.call(method, path, body)
        assert st == 400, (method, path, st, data)
        assert data["id"] == "fake_openapi_violation", data
        assert needle in data["message"], (needle, data["message"])
    # wrong content type is a violation too
    st, _, data = c.call("POST", "/v2/tags", headers={"Content-Type": "text/plain"},
                         raw_body=b'{"name":"x"}')
    assert st == 400 and "Content-Type" in data["message"]
    # nothing was created by the rejected requests
    state = c.ctl("GET", "state")
    assert state["droplets"] == [] and state["firewalls"] == [] and state["tags"] == []
    # valid requests are not violations
    c.post("/v2/firewalls", {"name": "fw", "inbound_rules": [UDP_RULE]}, expect=202)
    c.post("/v2/droplets", DROPLET, expect=202)
    c.get("/v2/droplets?per_page=200&page=1", expect=200)
    viol = c.ctl("GET", "violations")["violations"]
    assert len(viol) == len(bad) + 1
    assert all(v["status"] == 400 and v["validation_error"] for v in viol)
    log = c.ctl("GET", "requests")["requests"]
    assert sum(1 for e in log if e["valid"]) == 3
    # a violation is reported even without a token (validation comes first)
    st, _, data = c.call("GET", "/v2/droplets/abc", token=None)
    assert st == 400


def test_images_list_and_get(c):
    images = c.get("/v2/images?type=distribution", expect=200)[2]["images"]
    assert "ubuntu-24-04-x64" in [i["slug"] for i in images]
    assert c.get("/v2/images/ubuntu-24-04-x64", expect=200)[2]["image"]["distribution"] == "Ubuntu"
    c.get("/v2/images/windows-95", expect=404)


def test_regions_sizes_and_unknown_values(c):
    regions = c.get("/v2/regions", expect=200)[2]
    assert "nyc3" in [r["slug"] for r in regions["regions"]]
    sizes = c.get("/v2/sizes", expect=200)[2]["sizes"]
    s = next(x for x in sizes if x["slug"] == "s-1vcpu-1gb")
    assert s["memory"] == 1024 and s["price_monthly"] > 0
    assert c.post("/v2/droplets", dict(DROPLET, size="huge"), expect=422)[2]["id"] == \
        "unprocessable_entity"
    c.post("/v2/droplets", dict(DROPLET, image="windows-95"), expect=422)
    c.post("/v2/droplets", dict(DROPLET, region="mars1"), expect=422)
    c.post("/v2/droplets", dict(DROPLET, ssh_keys=[12345]), expect=422)
    d = c.post("/v2/droplets", dict(DROPLET, region="fra"), expect=202)[2]["droplet"]
    assert d["region"]["slug"] == "fra1"  # a region prefix is allowed
    c.get("/v2/droplets/999", expect=404)
    c.get("/v2/actions/999", expect=404)
    c.post("/v2/droplets", dict(DROPLET, user_data="x" * (64 * 1024 + 1)), expect=422)
    assert c.ctl("GET", "violations")["violations"] == []


def test_response_validation_is_not_vacuous(spec):
    """The response checker used above really catches drift."""
    good = {"droplet": {"id": 1}}  # droplet lacks required fields
    errs = spec.validate_response("GET", "/v2/droplets/1", 200,
                                  {"content-type": "application/json"},
                                  json.dumps(good).encode())
    assert errs and "required property" in " ".join(errs)
    errs = spec.validate_response("GET", "/v2/firewalls/x", 200,
                                  {"content-type": "application/json"},
                                  json.dumps({"firewall": {"status": "booting"}}).encode())
    assert errs and "booting" in " ".join(errs)


def test_missing_deps_message_names_installer():
    """Without its packages the fake refuses to start and says how to install them."""
    r = subprocess.run([sys.executable, "-S", "-I", os.path.join(HERE, "server.py"),
                        "--port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "scripts/testbed/fake-deps" in (r.stdout + r.stderr)


def test_validator_speed(spec):
    print(f"\nspec load: {spec.load_info['source']} {spec.load_info['load_seconds']}s, "
          f"validator init {spec.init_seconds}s")
    body = json.dumps(dict(DROPLET, tags=["a"], user_data="x")).encode()
    t0 = time.perf_counter()
    n = 200
    for _ in range(n):
        r = spec.validate_request("POST", "/v2/droplets", "", {"content-type":
                                                               "application/json"}, body)
        assert r.ok
    per = (time.perf_counter() - t0) / n * 1000
    print(f"POST /v2/droplets validation: {per:.2f} ms/request")
    assert per < 20
