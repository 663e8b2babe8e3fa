"""Self-tests of the Linode fake.

Run:  /opt/sfuctl-testbed/venv/bin/python -m pytest tests/fakes/linode -q
Every response the fake gives under /v4 is validated against the response schemas of
the official OpenAPI document (relaxed only as linode_openapi.RELAXATIONS says), so
the fake cannot drift from Linode.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import linode_openapi  # noqa: E402
from linode_openapi import LinodeValidator  # noqa: E402

TOKEN = "test-token-linode"
POOL = ["10.200.101.2", "10.200.102.2"]


@pytest.fixture(scope="session")
def spec() -> LinodeValidator:
    return LinodeValidator()


class Client:
    def __init__(self, port: int, spec: LinodeValidator):
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
        if path.startswith("/v4"):
            p = path.split("?")[0]
            # the fake's own validation answer is marked; everything else is Linode's
            own = headers.get("x-fake-openapi-violation") == "1"
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

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ctl(self, method, path, body=None):
        status, _, data = self.call(method, "/_fake/" + path, body)
        assert status == 200, (path, data)
        return data


def start_fake(tmp, *extra, env=None):
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "fake.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "server.py"), "--port", "0",
         "--port-file", port_file, "--token", TOKEN, "--exit-with-parent", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    while not os.path.exists(port_file):
        assert proc.poll() is None, open(os.path.join(tmp, "fake.log")).read()
        assert time.monotonic() - t0 < 20, "fake did not start"
        time.sleep(0.02)
    return proc, int(open(port_file).read()), log, time.monotonic() - t0


@pytest.fixture(scope="module")
def fake_proc():
    tmp = tempfile.mkdtemp(prefix="linode-fake-")
    proc, port, log, took = start_fake(tmp, "--address-pool", ",".join(POOL),
                                       "--log-file", os.path.join(tmp, "requests.jsonl"))
    print(f"fake started in {took:.2f}s on port {port}")
    try:
        yield port
    finally:
        proc.terminate()
        assert proc.wait(5) == 0  # SIGTERM is a clean exit
        log.close()
        assert os.path.getsize(os.path.join(tmp, "requests.jsonl")) > 0
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def c(fake_proc, spec):
    cl = Client(fake_proc, spec)
    cl.ctl("POST", "reset", {"address_pool": POOL, "boot_delay": 0, "page_size": 100,
                             "create_rate_limit": "10/30"})
    yield cl
    cl.conn.close()


def make_pubkey(seed: bytes = b"k1") -> str:
    keytype = b"ssh-ed25519"
    blob = (len(keytype).to_bytes(4, "big") + keytype + (32).to_bytes(4, "big")
            + hashlib.sha256(seed).digest())
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " test@sfuctl"


PASSWORD = "Xk9#mPq2vL8zRt5wYb3!"
USER_DATA = "#cloud-config\nruncmd:\n  - echo sfu\n"
INSTANCE = {"label": "sfu-1", "region": "us-east", "type": "g6-standard-1",
            "image": "linode/ubuntu24.04", "root_pass": PASSWORD, "tags": ["sfu-demo"],
            "authorized_keys": [make_pubkey()],
            "metadata": {"user_data": base64.b64encode(USER_DATA.encode()).decode()}}
UDP = {"protocol": "UDP", "ports": "40000-41000", "action": "ACCEPT", "label": "rtp-udp",
       "addresses": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}}
TCP443 = {"protocol": "TCP", "ports": "443", "action": "ACCEPT",
          "addresses": {"ipv4": ["0.0.0.0/0"]}}
ICMP = {"protocol": "ICMP", "action": "ACCEPT", "addresses": {"ipv4": ["0.0.0.0/0"]}}
FIREWALL = {"label": "sfu-demo-fw", "tags": ["sfu-demo"],
            "rules": {"inbound_policy": "DROP", "outbound_policy": "ACCEPT",
                      "inbound": [UDP, TCP443, ICMP], "outbound": []}}


def inst(**kw):
    b = copy.deepcopy(INSTANCE)
    b.update(kw)
    return {k: v for k, v in b.items() if v is not None}


def wait_for(fn, timeout=5.0, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


# ----------------------------------------------------------------------------- tests
def test_auth(c):
    _, h, body = c.get("/v4/profile", token=None, expect=401)
    assert body == {"errors": [{"reason": "Invalid Token"}]}
    c.get("/v4/linode/instances", token="wrong", expect=401)
    assert c.get("/v4/profile", expect=200)[2]["username"] == "sfuctl-fake"
    # public endpoints work without a token, but not with a wrong one
    c.get("/v4/regions", token=None, expect=200)
    c.get("/v4/regions", token="wrong", expect=401)
    assert c.ctl("GET", "violations")["violations"] == []


def test_catalog(c):
    regions = c.get("/v4/regions", expect=200)[2]
    assert regions["results"] == len(regions["data"]) and regions["pages"] == 1
    by_id = {r["id"]: r for r in regions["data"]}
    assert "Metadata" in by_id["us-east"]["capabilities"]
    assert "Metadata" not in by_id["us-southeast"]["capabilities"]
    assert by_id["us-east"]["site_type"] == "core"
    c.get("/v4/regions/us-east", expect=200)
    c.get("/v4/regions/mars-1", expect=404)
    types = c.get("/v4/linode/types", expect=200)[2]["data"]
    t = next(x for x in types if x["id"] == "g6-standard-1")
    assert t["memory"] == 2048 and t["price"]["monthly"] == 12.0
    assert t["region_prices"][0]["monthly"] > t["price"]["monthly"]
    images = c.get("/v4/images", expect=200)[2]["data"]
    ubuntu = next(i for i in images if i["id"] == "linode/ubuntu24.04")
    assert "cloud-init" in ubuntu["capabilities"]
    # the image ID holds a slash (relaxation image-id-slash)
    assert c.get("/v4/images/linode/ubuntu24.04", expect=200)[2]["label"].startswith("Ubuntu")
    c.get("/v4/images/linode/windows95", expect=404)
    assert c.ctl("GET", "violations")["violations"] == []


def test_instance_lifecycle_firewall_and_delete(c):
    c.ctl("POST", "config", {"boot_delay": 0.6})
    fw = c.post("/v4/networking/firewalls", FIREWALL, expect=200)[2]
    assert fw["status"] == "enabled" and fw["rules"]["version"] == 1
    assert fw["rules"]["inbound"] == [UDP, TCP443, ICMP]
    assert len(fw["rules"]["fingerprint"]) == 8
    _, h, i = c.post("/v4/linode/instances", inst(firewall_id=fw["id"]), expect=200)
    assert i["status"] == "provisioning" and i["ipv4"] == [POOL[0]]
    assert i["ipv6"].startswith("2001:db8:") and i["ipv6"].endswith("/128")
    assert i["has_user_data"] and i["tags"] == ["sfu-demo"] and i["label"] == "sfu-1"
    assert "T" in i["created"] and not i["created"].endswith("Z")  # Linode's format
    assert int(h["x-ratelimit-limit"]) == 10 and int(h["x-ratelimit-remaining"]) == 9
    # the instance is a device of the firewall it was created with
    devs = c.get(f"/v4/networking/firewalls/{fw['id']}/devices", expect=200)[2]
    assert [d["entity"] for d in devs["data"]] == [
        {"id": i["id"], "type": "linode", "label": "sfu-1",
         "url": f"/v4/linode/instances/{i['id']}"}]
    fws = c.get(f"/v4/linode/instances/{i['id']}/firewalls", expect=200)[2]["data"]
    assert [f["id"] for f in fws] == [fw["id"]]
    # transitions: provisioning -> booting -> running
    seen = set()

    def running():
        s = c.get(f"/v4/linode/instances/{i['id']}", expect=200)[2]["status"]
        seen.add(s)
        return s == "running"
    assert wait_for(running, 3), seen
    assert "booting" in seen
    ips = c.get(f"/v4/linode/instances/{i['id']}/ips", expect=200)[2]
    pub = ips["ipv4"]["public"][0]
    assert (pub["address"], pub["gateway"], pub["prefix"]) == (POOL[0], "10.200.101.1", 24)
    assert ips["ipv6"]["slaac"]["address"] == i["ipv6"].split("/")[0]
    state = c.ctl("GET", "state")
    si = state["instances"][0]["_fake"]
    assert si["user_data"] == USER_DATA and si["authorized_keys"] == INSTANCE["authorized_keys"]
    assert si["create_request"]["root_pass"] == "<redacted>"
    # one firewall per Linode
    fw2 = c.post("/v4/networking/firewalls", dict(FIREWALL, label="second-fw"),
                 expect=200)[2]
    _, _, e = c.post(f"/v4/networking/firewalls/{fw2['id']}/devices",
                     {"id": i["id"], "type": "linode"}, expect=400)
    assert e["errors"][0]["field"] == "id" and "only one Firewall" in e["errors"][0]["reason"]
    # delete: address back to the pool, device gone
    assert c.delete(f"/v4/linode/instances/{i['id']}", expect=200)[2] == {}
    c.get(f"/v4/linode/instances/{i['id']}", expect=404)
    assert c.get(f"/v4/networking/firewalls/{fw['id']}/devices")[2]["data"] == []
    assert sorted(c.ctl("GET", "address-pool")["available"]) == sorted(POOL)
    # attach later, detach, delete the firewalls
    j = c.post("/v4/linode/instances", inst(label="sfu-2"), expect=200)[2]
    d = c.post(f"/v4/networking/firewalls/{fw2['id']}/devices",
               {"id": j["id"], "type": "linode"}, expect=200)[2]
    assert d["entity"]["id"] == j["id"]
    c.get(f"/v4/networking/firewalls/{fw2['id']}/devices/{d['id']}", expect=200)
    c.delete(f"/v4/networking/firewalls/{fw2['id']}/devices/{d['id']}", expect=200)
    c.get(f"/v4/networking/firewalls/{fw2['id']}/devices/{d['id']}", expect=404)
    c.delete(f"/v4/networking/firewalls/{fw['id']}", expect=200)
    c.get(f"/v4/networking/firewalls/{fw['id']}", expect=404)
    assert c.ctl("GET", "violations")["violations"] == []


def test_firewall_rules_and_limits(c):
    fw = c.post("/v4/networking/firewalls", FIREWALL, expect=200)[2]
    fid = fw["id"]
    r = c.put(f"/v4/networking/firewalls/{fid}/rules", {"inbound": [TCP443]}, expect=200)[2]
    assert r["inbound"] == [TCP443] and r["version"] == 2
    assert r["inbound_policy"] == "DROP"  # only what is given is replaced
    assert r["fingerprint"] != fw["rules"]["fingerprint"]
    assert c.get(f"/v4/networking/firewalls/{fid}/rules", expect=200)[2] == r
    many = [dict(TCP443, ports=str(1000 + n)) for n in range(26)]
    _, _, e = c.put(f"/v4/networking/firewalls/{fid}/rules", {"inbound": many}, expect=400)
    assert e["errors"][0]["field"] == "rules" and "25" in e["errors"][0]["reason"]
    c.put(f"/v4/networking/firewalls/{fid}/rules", {"inbound": many[:20],
                                                    "outbound": many[:5]}, expect=200)
    bad_rules = [
        (dict(UDP, ports="0-100"), "rules.inbound[0].ports"),
        (dict(UDP, ports="080"), "rules.inbound[0].ports"),
        (dict(UDP, ports="1,2,3,4,5,6,7,8,9,10,11,12,13,14,15-16"), "rules.inbound[0].ports"),
        (dict(ICMP, ports="8"), "rules.inbound[0].ports"),
        (dict(UDP, addresses={"ipv4": []}), "rules.inbound[0].addresses.ipv4"),
        (dict(UDP, addresses={"ipv4": ["300.1.1.1/32"]}), "rules.inbound[0].addresses.ipv4"),
        (dict(UDP, addresses={}), "rules.inbound[0].addresses"),
    ]
    for rule, field in bad_rules:
        _, _, e = c.put(f"/v4/networking/firewalls/{fid}/rules", {"inbound": [rule]},
                        expect=400)
        assert e["errors"][0]["field"] == field, (rule, e)
    ok = c.put(f"/v4/networking/firewalls/{fid}/rules", {"inbound": [
        dict(UDP, ports="22-24, 80, 443"), dict(UDP, ports=None),
        dict(UDP, ports="1,2,3,4,5,6,7,8,9,10,11,12,13,14-15")]}, expect=200)[2]
    assert "ports" not in ok["inbound"][1]  # null ports = all ports
    # label rules: unique, 3-32 chars
    _, _, e = c.post("/v4/networking/firewalls", FIREWALL, expect=400)
    assert e["errors"] == [{"field": "label",
                            "reason": "Label must be unique among your Cloud Firewalls"}]
    _, h, _ = c.post("/v4/networking/firewalls", dict(FIREWALL, label="ab"), expect=400)
    assert h["x-fake-openapi-violation"] == "1"  # minLength 3 is the document's
    put = c.put(f"/v4/networking/firewalls/{fid}", {"label": "renamed", "status": "disabled"},
                expect=200)[2]
    assert put["label"] == "renamed" and put["status"] == "disabled"
    # devices at create
    i = c.post("/v4/linode/instances", inst(), expect=200)[2]
    fw3 = c.post("/v4/networking/firewalls", dict(FIREWALL, label="with-dev",
                                                  devices={"linodes": [i["id"]]}),
                 expect=200)[2]
    assert c.get(f"/v4/linode/instances/{i['id']}/firewalls")[2]["data"][0]["id"] == fw3["id"]
    c.post("/v4/networking/firewalls", dict(FIREWALL, label="x-dev",
                                            devices={"linodes": [999]}), expect=400)
    viol = c.ctl("GET", "violations")["violations"]
    assert [v["body"]["label"] for v in viol] == ["ab"]


def test_instance_create_checks(c):
    cases = [
        (inst(region="mars-1"), "region"),
        (inst(type="g6-huge"), "type"),
        (inst(image="linode/windows95"), "image"),
        (inst(root_pass=None), "root_pass"),
        (inst(root_pass="password123"), "root_pass"),
        (inst(root_pass="aaaaaaaaaaaa"), "root_pass"),
        (inst(authorized_keys=["ssh-ed25519 AAAAjunk"]), "authorized_keys[0]"),
        (inst(region="us-southeast"), "metadata"),         # region without Metadata
        (inst(image="linode/alpine3.19"), "metadata"),     # image without cloud-init
        (inst(firewall_id=424242), "firewall_id"),
        (inst(metadata={"user_data": base64.b64encode(b"x" * 65536).decode()}),
         "metadata.user_data"),
        (inst(private_ip=True), "private_ip"),
    ]
    for body, field in cases:
        _, _, e = c.post("/v4/linode/instances", body, expect=400)
        assert e["errors"][0]["field"] == field, (field, e)
    assert e["errors"][0]["reason"]
    c.post("/v4/linode/instances", inst(), expect=200)
    _, _, e = c.post("/v4/linode/instances", inst(), expect=400)  # label taken
    assert e["errors"][0] == {"field": "label",
                              "reason": "Label must be unique among your linodes"}
    # no label: the API makes one; a region without Metadata is fine without user_data
    auto = c.post("/v4/linode/instances", inst(label=None, metadata=None,
                                               region="us-southeast"), expect=200)[2]
    assert auto["label"] == f"linode{auto['id']}"
    # the pool is exhausted now (2 addresses): a clear 400, nothing half-created
    _, _, e = c.post("/v4/linode/instances", inst(label="sfu-3"), expect=400)
    assert "pool exhausted" in e["errors"][0]["reason"]
    assert len(c.ctl("GET", "state")["instances"]) == 2
    assert c.ctl("GET", "violations")["violations"] == []


def test_pagination_and_filter(c):
    c.ctl("POST", "address-pool", {"addresses": [f"10.200.{200 + n}.2" for n in range(7)],
                                   "replace": True})
    c.ctl("POST", "config", {"page_size": 3})
    for n in range(7):
        c.post("/v4/linode/instances",
               inst(label=f"node-{n}", tags=["even" if n % 2 == 0 else "odd", "sfu"]),
               expect=200)
    p1 = c.get("/v4/linode/instances", expect=200)[2]
    assert (p1["page"], p1["pages"], p1["results"], len(p1["data"])) == (1, 3, 7, 3)
    p3 = c.get("/v4/linode/instances?page=3", expect=200)[2]
    assert (p3["page"], len(p3["data"])) == (3, 1)
    ids = [i["id"] for p in (1, 2, 3)
           for i in c.get(f"/v4/linode/instances?page={p}")[2]["data"]]
    assert len(set(ids)) == 7 and ids == sorted(ids)
    big = c.get("/v4/linode/instances?page_size=25", expect=200)[2]
    assert big["pages"] == 1 and len(big["data"]) == 7
    beyond = c.get("/v4/linode/instances?page=9", expect=200)[2]
    assert beyond["data"] == [] and beyond["pages"] == 3
    flt = {"X-Filter": json.dumps({"tags": "even"})}
    even = c.get("/v4/linode/instances?page_size=25", headers=flt, expect=200)[2]
    assert even["results"] == 4 and all("even" in i["tags"] for i in even["data"])
    lab = c.get("/v4/linode/instances", headers={"X-Filter": json.dumps(
        {"+or": [{"label": "node-1"}, {"label": "node-2"}]})}, expect=200)[2]
    assert sorted(i["label"] for i in lab["data"]) == ["node-1", "node-2"]
    desc = c.get("/v4/linode/instances?page_size=25", headers={"X-Filter": json.dumps(
        {"+order_by": "label", "+order": "desc"})}, expect=200)[2]
    assert desc["data"][0]["label"] == "node-6"
    _, _, e = c.get("/v4/linode/instances", headers={"X-Filter": json.dumps(
        {"status": "running"})}, expect=400)  # not __Filterable__ in the document
    assert e["errors"] == [{"field": "X-Filter", "reason": "Cannot filter on status"}]
    assert c.ctl("GET", "violations")["violations"] == []


def test_create_rate_limit(c):
    c.ctl("POST", "address-pool", {"addresses": [f"10.200.{200 + n}.2" for n in range(14)],
                                   "replace": True})
    for n in range(10):
        c.post("/v4/linode/instances", inst(label=f"rl-{n}"), expect=200)
    _, h, e = c.post("/v4/linode/instances", inst(label="rl-10"), expect=429)
    assert e == {"errors": [{"reason": "Too many requests"}]}
    assert 1 <= int(h["retry-after"]) <= 30 and h["x-ratelimit-remaining"] == "0"
    c.get("/v4/linode/instances", expect=200)  # other requests are not limited
    c.ctl("POST", "config", {"create_rate_limit": "2/0.5"})
    c.post("/v4/linode/instances", inst(label="rl-a"), expect=200)
    c.post("/v4/linode/instances", inst(label="rl-b"), expect=200)
    _, h, _ = c.post("/v4/linode/instances", inst(label="rl-c"), expect=429)
    time.sleep(float(h["retry-after"]) if int(h["retry-after"]) < 1 else 0.55)
    c.post("/v4/linode/instances", inst(label="rl-c"), expect=200)
    assert c.ctl("GET", "violations")["violations"] == []


def test_injected_faults(c):
    c.ctl("POST", "faults", {"method": "POST", "path_regex": "^/v4/linode/instances$",
                             "status": 429, "count": 2, "retry_after": 1})
    for _ in range(2):
        _, h, e = c.post("/v4/linode/instances", inst(), expect=429)
        assert h["retry-after"] == "1" and e == {"errors": [{"reason": "Too many requests"}]}
    c.post("/v4/linode/instances", inst(), expect=200)
    c.ctl("POST", "faults", [{"path_regex": "^/v4/profile$", "status": 429},
                             {"path_regex": "^/v4/profile$", "status": 500},
                             {"path_regex": "^/v4/profile$", "status": 503},
                             {"path_regex": "^/v4/profile$", "action": "delay",
                              "delay": 0.3}])
    _, h, _ = c.get("/v4/profile", expect=429)
    assert "retry-after" not in h
    assert c.get("/v4/profile", expect=500)[2]["errors"][0]["reason"]
    c.get("/v4/profile", expect=503)
    t0 = time.monotonic()
    c.get("/v4/profile", expect=200)
    assert time.monotonic() - t0 >= 0.3
    c.ctl("POST", "faults", {"path_regex": "^/v4/regions$", "action": "drop"})
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        c.raw("GET", "/v4/regions")
    c.conn.close()
    c.get("/v4/regions", expect=200)
    faults = c.ctl("GET", "faults")["faults"]
    assert [f["hits"] for f in faults] == [2, 1, 1, 1, 1, 1]
    log = c.ctl("GET", "requests")["requests"]
    assert [e["status"] for e in log if e["path"] == "/v4/linode/instances"] == [429, 429, 200]
    assert all(e["valid"] for e in log)


def test_spec_rejects_invalid_requests(c):
    bad = [
        ("POST", "/v4/linode/instances", inst(type=None), "type", "type is required"),
        ("POST", "/v4/linode/instances", inst(region=5), "region", "not of type 'string'"),
        ("POST", "/v4/linode/instances", inst(tags="sfu"), "tags", "not of type 'array'"),
        ("POST", "/v4/linode/instances", inst(label="1abc"), "label", "does not match"),
        ("POST", "/v4/linode/instances", inst(root_pass="short"), "root_pass", "too short"),
        ("POST", "/v4/linode/instances", inst(bogus=1), None, "'bogus' was unexpected"),
        ("POST", "/v4/linode/instances", inst(metadata={"user_data": "!!"}),
         "metadata.user_data", "'byte'"),
        ("POST", "/v4/networking/firewalls", dict(FIREWALL, rules={
            "inbound_policy": "DROP", "outbound_policy": "ACCEPT",
            "inbound": [dict(UDP, protocol="udp")]}), "rules.inbound[0].protocol", "udp"),
        ("POST", "/v4/networking/firewalls", dict(FIREWALL, rules={
            "inbound_policy": "DROP", "outbound_policy": "ACCEPT",
            "inbound": [dict(UDP, ports=40000)]}), "rules.inbound[0].ports", "40000"),
        ("POST", "/v4/networking/firewalls", dict(FIREWALL, rules={
            "inbound_policy": "ALLOW", "outbound_policy": "ACCEPT"}),
         "rules.inbound_policy", "ALLOW"),
        ("POST", "/v4/networking/firewalls", dict(FIREWALL, rules={"inbound": []}),
         "rules.inbound_policy", "is required"),
        ("POST", "/v4/networking/firewalls", dict(FIREWALL, rules={
            "inbound_policy": "DROP", "outbound_policy": "ACCEPT",
            "inbound": [{"protocol": "TCP", "ports": "22"}]}),
         "rules.inbound[0].action", "is required"),  # relaxation required-on-array
        ("POST", "/v4/networking/firewalls/1/devices", {"id": 1, "type": "linode",
                                                        "label": "x"}, "label", "read-only"),
        ("GET", "/v4/linode/instances?page_size=10", None, "page_size", "minimum of 25"),
        ("GET", "/v4/linode/instances?page=0", None, "page", "minimum of 1"),
        ("GET", "/v4/linode/instances/abc", None, "linodeId", "not of type 'integer'"),
        ("GET", "/v5/linode/instances", None, "apiVersion", "'v5' is not one of"),
        ("GET", "/v4/linode/instance", None, None, "no path in the OpenAPI document"),
        ("PATCH", "/v4/linode/instances", {}, None, "PATCH is not defined"),
        ("POST", "/v4/linode/instances", None, None, "request body is required"),
    ]
    for method, path, body, field, needle in bad:
        st, h, data = c.call(method, path, body)
        assert st == 400 and h.get("x-fake-openapi-violation") == "1", (path, st, data)
        errs = data["errors"]
        assert any(e.get("field") == field and needle in e["reason"] for e in errs), \
            (field, needle, errs)
    st, _, data = c.call("GET", "/v4/linode/instances",
                         headers={"X-Filter": "{not json"})
    assert st == 400 and data["errors"][0]["field"] == "X-Filter"
    st, _, data = c.call("POST", "/v4/profile/sshkeys", headers={"Content-Type": "text/plain"},
                         raw_body=b'{"label":"x"}')
    assert st == 400 and "Content-Type" in json.dumps(data)
    state = c.ctl("GET", "state")
    assert state["instances"] == [] and state["firewalls"] == []
    viol = c.ctl("GET", "violations")["violations"]
    assert len(viol) == len(bad) + 2
    # a violation is reported even without a token (validation comes first)
    assert c.call("GET", "/v4/linode/instances/abc", token=None)[0] == 400


def test_relaxed_firewall_body_passes(c, spec):
    """The published document rejects this valid body (allOf + additionalProperties:
    false); the relaxed one accepts it, and the fake serves it."""
    body = dict(FIREWALL, devices={"linodes": []})
    raw_doc, _ = linode_openapi.openapi_check.load_document(spec.spec_path, True,
                                                            linode_openapi.CACHE_PREFIX)
    strict = linode_openapi.openapi_check.OpenAPIValidator(raw_doc)
    r = strict.validate_request("POST", "/v4/networking/firewalls", "",
                                {"content-type": "application/json"},
                                json.dumps(body).encode())
    assert not r.ok and "Additional properties" in r.message
    r = spec.validate_request("POST", "/v4/networking/firewalls", "",
                              {"content-type": "application/json"},
                              json.dumps(body).encode())
    assert r.ok, r.errors
    c.post("/v4/networking/firewalls", body, expect=200)
    c.post("/v4/linode/instances", inst(firewall_id=None), expect=200)
    names = {x["name"]: x["places"] for x in c.ctl("GET", "health")["relaxations"]}
    assert set(linode_openapi.RELAXATIONS) <= set(names)
    assert all(n >= 1 for n in names.values()), names
    assert c.ctl("GET", "violations")["violations"] == []


def test_ssh_keys(c):
    k = c.post("/v4/profile/sshkeys", {"label": "sfuctl", "ssh_key": make_pubkey()},
               expect=200)[2]
    assert c.get(f"/v4/profile/sshkeys/{k['id']}", expect=200)[2] == k
    assert c.get("/v4/profile/sshkeys", expect=200)[2]["results"] == 1
    c.post("/v4/profile/sshkeys", {"label": "junk", "ssh_key": "ssh-rsa !!!"}, expect=400)
    c.delete(f"/v4/profile/sshkeys/{k['id']}", expect=200)
    c.get(f"/v4/profile/sshkeys/{k['id']}", expect=404)
    assert c.ctl("GET", "violations")["violations"] == []


def test_response_validation_is_not_vacuous(spec):
    def check(path, body):
        return spec.validate_response("GET", path, 200, {"content-type": "application/json"},
                                      json.dumps(body).encode())
    assert "not one of" in " ".join(check("/v4/linode/instances/1", {"status": "new"}))
    assert "additional" in " ".join(check("/v4/linode/instances/1", {"bogus": 1})).lower()
    assert check("/v4/linode/instances/1", {"created": "2018-01-01T00:01:01"}) == []
    assert check("/v4/linode/instances/1", {"created": "yesterday"})  # still a format


def test_spec_examples_pass_after_relaxation(spec):
    """The document's own property examples (as Prism assembles them) for the responses
    the fake serves validate once relaxed: the relaxations are what the examples need."""
    def synth(s):
        if "example" in s:
            return s["example"]
        if "properties" in s or s.get("type") == "object":
            return {k: synth(v) for k, v in s.get("properties", {}).items()}
        if s.get("type") == "array":
            return [synth(s.get("items", {}))]
        return {"string": "x", "integer": 1, "number": 1.0, "boolean": True}.get(s.get("type"))
    for path, tmpl in [("/v4/linode/instances/1/firewalls",
                        "/{apiVersion}/linode/instances/{linodeId}/firewalls"),
                       ("/v4/networking/firewalls/1", "/{apiVersion}/networking/firewalls/{firewallId}"),
                       ("/v4/images", "/{apiVersion}/images"),
                       ("/v4/linode/instances/1/ips", "/{apiVersion}/linode/instances/{linodeId}/ips")]:
        schema = spec.doc["paths"][tmpl]["get"]["responses"]["200"]["content"][
            "application/json"]["schema"]
        errs = spec.validate_response("GET", path, 200, {"content-type": "application/json"},
                                      json.dumps(synth(schema)).encode())
        assert errs == [], (path, errs)


def test_boot_vms_with_mock(tmp_path, spec):
    """--boot-vms: each instance boots a VM through FreshVms (a mock here)."""
    calls = tmp_path / "calls.jsonl"
    mock = tmp_path / "mockvm.py"
    mock.write_text(f'''
import base64, json
LOG = {str(calls)!r}
def _log(*a):
    with open(LOG, "a") as f:
        f.write(json.dumps(a) + "\\n")
class FreshVms:
    def __init__(self, owner_pid=None):
        _log("init", owner_pid)
        self.n = 0
    def boot(self, name, user_data, public_keys, login_user):
        self.n += 1
        _log("boot", name, base64.b64encode(user_data).decode() if user_data else None,
             public_keys, login_user)
        return f"10.77.0.{{self.n + 1}}"
    def destroy(self, name):
        _log("destroy", name)
    def destroy_all(self):
        _log("destroy_all")
''')
    env = dict(os.environ, SFUCTL_FAKE_FRESHVM=str(mock))
    proc, port, log, _ = start_fake(str(tmp_path), "--boot-vms", env=env)
    try:
        c = Client(port, spec)
        i = c.post("/v4/linode/instances", inst(), expect=200)[2]
        assert i["ipv4"] == ["10.77.0.2"]  # the VM's address, not a pool one
        c.delete(f"/v4/linode/instances/{i['id']}", expect=200)
        c.conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        log.close()
    got = [json.loads(line) for line in calls.read_text().splitlines()]
    assert got[0][0] == "init"
    assert got[1] == ["boot", "sfu-1", INSTANCE["metadata"]["user_data"],
                      INSTANCE["authorized_keys"], "root"]
    assert got[2:] == [["destroy", "sfu-1"], ["destroy_all"]]


def test_missing_deps_message_names_installer():
    r = subprocess.run([sys.executable, "-S", "-I", os.path.join(HERE, "server.py"),
                        "--port", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "scripts/testbed/fake-deps" in (r.stdout + r.stderr)
