"""Self-tests of the Vultr fake.

Run:  /opt/sfuctl-testbed/venv/bin/python -m pytest tests/fakes/vultr -q
Every response the fake gives under /v2 is validated against the response schemas of the
(patched) Vultr OpenAPI document with OAS30ReadValidator, so the fake cannot drift from it.
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
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import vultr_openapi  # noqa: E402
from openapi_check import OpenAPIValidator, load_document  # noqa: E402

KEY = "test-key-123"
POOL = ["10.200.101.2", "10.200.102.2"]
PY = sys.executable


@pytest.fixture(scope="session")
def spec() -> OpenAPIValidator:
    return vultr_openapi.load_validator()


class Client:
    def __init__(self, port: int, spec: OpenAPIValidator):
        self.port = port
        self.spec = spec
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def raw(self, method, path, body=None, key=KEY, headers=None, raw_body=None):
        h = {"Content-Type": "application/json"}
        if key is not None:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        data = raw_body if raw_body is not None else (
            json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers=h)
        r = self.conn.getresponse()
        payload = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, payload

    def call(self, method, path, body=None, expect=None, **kw):
        status, headers, payload = self.raw(method, path, body, **kw)
        data = json.loads(payload) if payload else None
        if path.startswith("/v2/"):
            rel = path[3:].split("?")[0]
            # the 400 "openapi violation" answer is the fake's own verdict, not Vultr's
            own = status == 400 and data and data["error"].startswith("openapi violation")
            if self.spec.find(method, rel)[0] is not None and not own:
                errs = self.spec.validate_response(method, rel, status, headers, payload)
                assert not errs, f"{method} {path} -> {status}: response drifts: {errs}"
            if status >= 400:  # Vultr's error shape, always
                assert set(data) == {"error", "status"} and data["status"] == status, data
            if status == 204:
                assert payload == b""
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {data}"
        return status, headers, data

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ctl(self, method, path, body=None):
        status, _, data = self.call(method, "/_fake/" + path, body)
        assert status == 200, (path, data)
        return data

    def violations(self):
        return self.ctl("GET", "violations")["violations"]


def start_fake(extra: list[str], env: dict | None = None):
    tmp = tempfile.mkdtemp(prefix="vultr-fake-")
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "fake.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [PY, os.path.join(HERE, "server.py"), "--port", "0", "--port-file", port_file,
         "--api-key", KEY, "--exit-with-parent", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    while not os.path.exists(port_file):
        assert proc.poll() is None, open(os.path.join(tmp, "fake.log")).read()
        assert time.monotonic() - t0 < 20, "fake did not start"
        time.sleep(0.02)
    return proc, int(open(port_file).read()), tmp, log


def stop_fake(proc, tmp, log) -> int:
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(5)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return rc


@pytest.fixture(scope="module")
def fake_proc():
    proc, port, tmp, log = start_fake(["--address-pool", ",".join(POOL)])
    try:
        yield port
    finally:
        assert stop_fake(proc, tmp, log) == 0  # SIGTERM: clean exit


@pytest.fixture
def c(fake_proc, spec):
    cl = Client(fake_proc, spec)
    cl.ctl("POST", "reset", {"address_pool": POOL, "boot_delay": 0, "lock_delay": 0,
                             "install_delay": 0, "max_rule_count": 50,
                             "enforce_rate_limits": False})
    yield cl
    cl.conn.close()


def make_pubkey(seed: bytes = b"k1") -> str:
    kt = b"ssh-ed25519"
    blob = (len(kt).to_bytes(4, "big") + kt + (32).to_bytes(4, "big")
            + hashlib.sha256(seed).digest())
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " test@sfuctl"


INSTANCE = {"region": "ewr", "plan": "vc2-1c-1gb", "os_id": 2284, "label": "sfu-1",
            "hostname": "sfu-1"}
UDP_V4 = {"ip_type": "v4", "protocol": "udp", "subnet": "0.0.0.0", "subnet_size": 0,
          "port": "40000:41000", "notes": "media"}
UDP_V6 = dict(UDP_V4, ip_type="v6", subnet="::")


def wait_for(fn, timeout=5.0, step=0.05):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


# ----------------------------------------------------------------------------- auth
def test_auth_401_and_public_catalog(c):
    _, _, body = c.get("/v2/instances", key=None, expect=401)
    assert body == {"error": "Invalid API token.", "status": 401}
    c.get("/v2/instances", key="wrong", expect=401)
    c.post("/v2/ssh-keys", {"name": "k", "ssh_key": make_pubkey()}, key="wrong", expect=401)
    c.get("/v2/instances", expect=200)
    # GET /os, /plans, /regions have `security: []`: no key needed
    for p in ("/v2/os", "/v2/plans", "/v2/regions"):
        c.get(p, key=None, expect=200)
    assert c.violations() == []
    # unknown prefix: not Vultr's API at all
    assert c.get("/instances", expect=404)[2]["error"].startswith("fake: no route")


# ----------------------------------------------------------------------------- catalog
def test_os_lookup_by_name_and_cursor_pagination(c):
    _, _, p1 = c.get("/v2/os?per_page=5", expect=200)
    assert len(p1["os"]) == 5 and p1["meta"]["total"] == 13
    assert p1["meta"]["links"]["prev"] == "" and p1["meta"]["links"]["next"]
    seen, pages, nxt = list(p1["os"]), [p1], p1["meta"]["links"]["next"]
    while nxt:
        _, _, pg = c.get(f"/v2/os?per_page=5&cursor={nxt}", expect=200)
        assert pg["meta"]["links"]["prev"], "a later page has a prev cursor"
        seen += pg["os"]
        pages.append(pg)
        nxt = pg["meta"]["links"]["next"]
    assert [len(p["os"]) for p in pages] == [5, 5, 3]
    assert pages[-1]["meta"]["links"]["next"] == ""  # empty string, not absent
    assert len({o["id"] for o in seen}) == 13
    ubuntu = [o for o in seen if o["name"] == "Ubuntu 24.04 LTS x64"]
    assert ubuntu == [{"id": 2284, "name": "Ubuntu 24.04 LTS x64", "arch": "x64",
                       "family": "ubuntu"}]
    assert 2284 not in [o["id"] for o in p1["os"]]  # not on the first small page
    # prev of page 3 is page 2
    _, _, back = c.get(f"/v2/os?per_page=5&cursor={pages[2]['meta']['links']['prev']}")
    assert back["os"] == pages[1]["os"]
    _, _, whole = c.get("/v2/os?per_page=500", expect=200)
    assert len(whole["os"]) == 13 and whole["meta"]["links"] == {"next": "", "prev": ""}
    _, _, dflt = c.get("/v2/os", expect=200)  # default per_page is 100
    assert len(dflt["os"]) == 13
    c.get("/v2/os?cursor=not-a-cursor", expect=400)
    assert c.violations() == []


def test_plans_and_regions(c):
    _, _, plans = c.get("/v2/plans?type=vc2", expect=200)
    p = next(x for x in plans["plans"] if x["id"] == "vc2-1c-1gb")
    assert (p["vcpu_count"], p["ram"], p["disk"], p["bandwidth"], p["monthly_cost"]) == \
        (1, 1024, 25, 1024, 5.0)
    assert "ewr" in p["locations"] and {x["type"] for x in plans["plans"]} == {"vc2"}
    assert len(c.get("/v2/plans", expect=200)[2]["plans"]) > len(plans["plans"])
    regions = c.get("/v2/regions", expect=200)[2]["regions"]
    ewr = next(r for r in regions if r["id"] == "ewr")
    assert ewr["city"] == "New Jersey" and ewr["country"] == "US"
    avail = c.get("/v2/regions/sgp/availability", expect=200)[2]["available_plans"]
    assert "vc2-1c-1gb" in avail and "vhp-1c-1gb-amd" not in avail
    _, _, e = c.post("/v2/instances", dict(INSTANCE, region="sgp", plan="vhp-1c-1gb-amd"),
                     expect=400)
    assert "not available" in e["error"]
    c.post("/v2/instances", dict(INSTANCE, plan="vc9-huge"), expect=400)
    c.post("/v2/instances", dict(INSTANCE, region="mars"), expect=400)
    c.post("/v2/instances", dict(INSTANCE, os_id=9999), expect=400)
    assert c.ctl("GET", "state")["instances"] == []
    assert c.violations() == []  # semantic errors are Vultr's answers, not violations


# ----------------------------------------------------------------------------- ssh keys
def test_ssh_keys(c):
    pub = make_pubkey()
    _, _, body = c.post("/v2/ssh-keys", {"name": "sfuctl-demo", "ssh_key": pub}, expect=201)
    k = body["ssh_key"]
    assert k["name"] == "sfuctl-demo" and k["ssh_key"] == pub and len(k["id"]) == 36
    assert c.get(f"/v2/ssh-keys/{k['id']}", expect=200)[2]["ssh_key"] == k
    lst = c.get("/v2/ssh-keys", expect=200)[2]
    assert lst["ssh_keys"] == [k] and lst["meta"]["total"] == 1
    c.patch(f"/v2/ssh-keys/{k['id']}", {"name": "renamed"}, expect=204)
    assert c.get(f"/v2/ssh-keys/{k['id']}")[2]["ssh_key"]["name"] == "renamed"
    _, _, e = c.post("/v2/ssh-keys", {"name": "junk", "ssh_key": "ssh-ed25519 !!!"},
                     expect=400)
    assert "Invalid SSH key" in e["error"]
    c.delete(f"/v2/ssh-keys/{k['id']}", expect=204)
    assert c.get(f"/v2/ssh-keys/{k['id']}", expect=404)[2]["error"] == "Invalid ssh key."
    c.delete(f"/v2/ssh-keys/{k['id']}", expect=404)
    assert c.violations() == []


# ----------------------------------------------------------------------------- instances
def test_instance_transitions_and_delete_rules(c):
    c.ctl("POST", "config", {"boot_delay": 0.6, "install_delay": 0.3})
    kid = c.post("/v2/ssh-keys", {"name": "k", "ssh_key": make_pubkey()},
                 expect=201)[2]["ssh_key"]["id"]
    ud = base64.b64encode(b"#cloud-config\nruncmd: [echo sfu]\n").decode()
    _, _, body = c.post("/v2/instances", dict(INSTANCE, sshkey_id=[kid], user_data=ud,
                                              tags=["sfuctl:demo", "role:sfu"],
                                              enable_ipv6=True, backups="disabled"),
                        expect=202)
    inst = body["instance"]
    assert (inst["status"], inst["server_status"], inst["main_ip"], inst["v6_main_ip"]) \
        == ("pending", "none", "0.0.0.0", "")
    assert inst["default_password"] and inst["tags"] == ["sfuctl:demo", "role:sfu"]
    assert inst["os"] == "Ubuntu 24.04 LTS x64" and inst["hostname"] == "sfu-1"
    iid = inst["id"]
    got = c.get(f"/v2/instances/{iid}")[2]["instance"]
    assert got["status"] == "pending" and got["main_ip"] == "0.0.0.0"
    assert "default_password" not in got
    # pending: DELETE is refused with a 500 (dstack#2132), first "not active", then locked
    _, _, e = c.delete(f"/v2/instances/{iid}", expect=500)
    assert "not currently active" in e["error"] or "currently locked" in e["error"]
    locked = wait_for(lambda: c.get(f"/v2/instances/{iid}")[2]["instance"]
                      ["server_status"] == "locked")
    assert locked
    _, _, e = c.delete(f"/v2/instances/{iid}", expect=500)
    assert e["error"] == ("Unable to destroy server: Unable to remove VM: Server is "
                          "currently locked")
    # active: main_ip from the pool, IPv6 from the documentation prefix
    act = wait_for(lambda: (lambda i: i if i["status"] == "active" else None)(
        c.get(f"/v2/instances/{iid}")[2]["instance"]))
    assert act and act["main_ip"] == POOL[0]
    assert (act["netmask_v4"], act["gateway_v4"]) == ("255.255.255.0", "10.200.101.1")
    assert act["v6_main_ip"].startswith("2001:db8:") and act["v6_network_size"] == 64
    assert act["server_status"] == "installingbooting"
    assert wait_for(lambda: c.get(f"/v2/instances/{iid}")[2]["instance"]
                    ["server_status"] == "ok")
    st = c.ctl("GET", "state")["instances"][0]["_fake"]
    assert st["sshkey_id"] == [kid] and st["user_data"] == ud
    assert c.ctl("GET", "address-pool")["in_use"] == {POOL[0]: iid}
    c.delete(f"/v2/instances/{iid}", expect=204)
    assert c.get(f"/v2/instances/{iid}", expect=404)[2]["error"] == "instance not found"
    c.delete(f"/v2/instances/{iid}", expect=404)
    assert sorted(c.ctl("GET", "address-pool")["available"]) == sorted(POOL)
    assert c.violations() == []


def test_lock_delay(c):
    c.ctl("POST", "config", {"lock_delay": 0.4})
    inst = c.post("/v2/instances", INSTANCE, expect=202)[2]["instance"]
    assert inst["server_status"] == "locked"
    got = c.get(f"/v2/instances/{inst['id']}")[2]["instance"]
    assert got["status"] == "active" and got["main_ip"] == POOL[0]  # boot_delay 0
    _, _, e = c.delete(f"/v2/instances/{inst['id']}", expect=500)
    assert "Server is currently locked" in e["error"]
    time.sleep(0.45)
    c.delete(f"/v2/instances/{inst['id']}", expect=204)


def test_pool_exhaustion(c):
    c.ctl("POST", "address-pool", {"addresses": ["10.200.101.2"], "replace": True})
    c.post("/v2/instances", INSTANCE, expect=202)
    _, _, e = c.post("/v2/instances", dict(INSTANCE, label="sfu-2"), expect=400)
    assert "pool exhausted" in e["error"]
    assert len(c.ctl("GET", "state")["instances"]) == 1  # nothing half-created
    pool = c.ctl("POST", "address-pool", {"addresses": ["10.200.103.2/30@10.200.103.1"]})
    assert pool["available"] == ["10.200.103.2"]
    i2 = c.post("/v2/instances", dict(INSTANCE, label="sfu-2"), expect=202)[2]["instance"]
    got = c.get(f"/v2/instances/{i2['id']}")[2]["instance"]
    assert (got["main_ip"], got["netmask_v4"], got["gateway_v4"]) == \
        ("10.200.103.2", "255.255.255.252", "10.200.103.1")


def test_instance_list_pagination_and_filters(c):
    addrs = [f"10.200.{200 + i}.2" for i in range(7)]
    c.ctl("POST", "address-pool", {"addresses": addrs, "replace": True})
    ids = []
    for i in range(7):
        tags = ["sfuctl:a"] if i < 4 else ["sfuctl:b"]
        region = "ewr" if i % 2 == 0 else "ams"
        ids.append(c.post("/v2/instances", dict(INSTANCE, label=f"n{i}", tags=tags,
                                                region=region), expect=202)[2]["instance"]["id"])
    got, cur, sizes = [], None, []
    while True:
        q = "/v2/instances?per_page=3" + (f"&cursor={cur}" if cur else "")
        _, _, pg = c.get(q, expect=200)
        assert pg["meta"]["total"] == 7
        got += [i["id"] for i in pg["instances"]]
        sizes.append(len(pg["instances"]))
        cur = pg["meta"]["links"]["next"]
        if cur == "":
            break
    assert sizes == [3, 3, 1] and got == ids  # creation order, nothing twice
    _, _, tagged = c.get("/v2/instances?tag=sfuctl:a", expect=200)
    assert [i["label"] for i in tagged["instances"]] == ["n0", "n1", "n2", "n3"]
    assert tagged["meta"]["total"] == 4
    assert c.get("/v2/instances?region=ams")[2]["meta"]["total"] == 3
    assert c.get("/v2/instances?label=n5")[2]["instances"][0]["id"] == ids[5]
    assert c.get(f"/v2/instances?main_ip={addrs[6]}")[2]["instances"][0]["id"] == ids[6]
    _, _, e = c.get("/v2/instances?tag=sfuctl:a&region=ewr", expect=400)
    assert e["error"] == "openapi violation: Only one filter per request is allowed."
    _, _, e = c.get("/v2/instances?per_page=501", expect=400)
    assert "per_page" in e["error"]
    # a cursor stays valid when the object it points at is deleted
    _, _, p1 = c.get("/v2/instances?per_page=3")
    c.delete(f"/v2/instances/{ids[3]}", expect=204)
    _, _, p2 = c.get(f"/v2/instances?per_page=3&cursor={p1['meta']['links']['next']}")
    assert [i["id"] for i in p2["instances"]] == ids[4:7]
    assert len(c.violations()) == 2


def test_patch_instance(c):
    fw = c.post("/v2/firewalls", {"description": "sfuctl:demo"},
                expect=201)[2]["firewall_group"]
    inst = c.post("/v2/instances", dict(INSTANCE, tags=["a"]), expect=202)[2]["instance"]
    _, _, up = c.patch(f"/v2/instances/{inst['id']}",
                       {"tags": ["b", "c"], "label": "new", "firewall_group_id": fw["id"]},
                       expect=202)
    assert up["instance"]["tags"] == ["b", "c"] and up["instance"]["label"] == "new"
    assert up["instance"]["firewall_group_id"] == fw["id"]
    assert c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall_group"]["instance_count"] == 1
    c.patch(f"/v2/instances/{inst['id']}", {"firewall_group_id": ""}, expect=202)
    assert c.get(f"/v2/firewalls/{fw['id']}")[2]["firewall_group"]["instance_count"] == 0
    c.patch(f"/v2/instances/{inst['id']}", {"firewall_group_id": "nope"}, expect=400)
    c.patch("/v2/instances/00000000-0000-0000-0000-000000000000", {"label": "x"},
            expect=404)
    assert c.violations() == []


# ----------------------------------------------------------------------------- firewalls
def test_firewall_groups_rules_and_limit(c):
    c.ctl("POST", "config", {"max_rule_count": 5})
    _, _, body = c.post("/v2/firewalls", {"description": "sfuctl:demo"}, expect=201)
    g = body["firewall_group"]
    assert (g["rule_count"], g["instance_count"], g["max_rule_count"]) == (0, 0, 5)
    gid = g["id"]
    rules = [UDP_V4, UDP_V6,
             {"ip_type": "v4", "protocol": "tcp", "subnet": "0.0.0.0", "subnet_size": 0,
              "port": "443"},
             {"ip_type": "v4", "protocol": "icmp", "subnet": "0.0.0.0", "subnet_size": 0},
             {"ip_type": "v6", "protocol": "tcp", "subnet": "2001:db8::", "subnet_size": 32,
              "port": "22", "source": ""}]
    made = []
    for r in rules:
        _, _, rb = c.post(f"/v2/firewalls/{gid}/rules", r, expect=201)
        fr = rb["firewall_rule"]
        assert isinstance(fr["id"], int) and fr["action"] == "accept"
        assert fr["ip_type"] == fr["type"] == r["ip_type"]
        assert fr["port"] == r.get("port", "") and fr["subnet"] == r["subnet"]
        made.append(fr)
    assert [r["id"] for r in made] == [1, 2, 3, 4, 5]
    # the sixth rule passes the limit
    _, _, e = c.post(f"/v2/firewalls/{gid}/rules",
                     dict(UDP_V4, port="3478"), expect=400)
    assert "maximum of 5 rules" in e["error"]
    g = c.get(f"/v2/firewalls/{gid}")[2]["firewall_group"]
    assert g["rule_count"] == 5
    lst = c.get(f"/v2/firewalls/{gid}/rules?per_page=2")[2]
    assert lst["meta"]["total"] == 5 and len(lst["firewall_rules"]) == 2
    assert c.get(f"/v2/firewalls/{gid}/rules/2")[2]["firewall_rule"] == made[1]
    c.delete(f"/v2/firewalls/{gid}/rules/2", expect=204)
    _, _, e = c.get(f"/v2/firewalls/{gid}/rules/2", expect=404)
    assert e["error"] == "Firewall rule ID not found."
    c.delete(f"/v2/firewalls/{gid}/rules/2", expect=404)
    c.post(f"/v2/firewalls/{gid}/rules", dict(UDP_V4, port="3478"), expect=201)
    _, _, e = c.post(f"/v2/firewalls/{gid}/rules", UDP_V4, expect=400)  # limit again
    # duplicate rule is refused (limit raised so only the duplicate check applies)
    c.ctl("POST", "config", {"max_rule_count": 50})
    g2 = c.post("/v2/firewalls", {}, expect=201)[2]["firewall_group"]
    assert g2["description"] == "" and g2["max_rule_count"] == 50
    c.post(f"/v2/firewalls/{g2['id']}/rules", UDP_V4, expect=201)
    assert "already exists" in c.post(f"/v2/firewalls/{g2['id']}/rules", UDP_V4,
                                      expect=400)[2]["error"]
    # attach at create: instance_count; group list; rename; delete
    inst = c.post("/v2/instances", dict(INSTANCE, firewall_group_id=gid),
                  expect=202)[2]["instance"]
    assert inst["firewall_group_id"] == gid
    assert c.get(f"/v2/firewalls/{gid}")[2]["firewall_group"]["instance_count"] == 1
    c.post("/v2/instances", dict(INSTANCE, firewall_group_id="nope"), expect=400)
    lst = c.get("/v2/firewalls")[2]
    assert [x["id"] for x in lst["firewall_groups"]] == [gid, g2["id"]]
    c.call("PUT", f"/v2/firewalls/{gid}", {"description": "renamed"}, expect=204)
    assert c.get(f"/v2/firewalls/{gid}")[2]["firewall_group"]["description"] == "renamed"
    c.delete(f"/v2/firewalls/{gid}", expect=204)
    c.get(f"/v2/firewalls/{gid}", expect=404)
    c.get(f"/v2/firewalls/{gid}/rules", expect=404)
    assert c.get(f"/v2/instances/{inst['id']}")[2]["instance"]["firewall_group_id"] == ""
    assert c.violations() == []


def test_prose_rules_on_firewall_rules(c):
    gid = c.post("/v2/firewalls", {"description": "x"}, expect=201)[2]["firewall_group"]["id"]
    bad = [
        (dict(UDP_V4, protocol="UDP"), "must be lowercase"),
        (dict(UDP_V4, protocol="sctp"), "protocol must be one of"),
        (dict(UDP_V4, port="40000-41000"), "colon separated"),
        (dict(UDP_V4, port="41000:40000"), "colon separated"),
        (dict(UDP_V4, port="70000"), "within 1-65535"),
        (dict(UDP_V4, subnet="::"), "does not match ip_type"),
        (dict(UDP_V6, subnet="0.0.0.0"), "does not match ip_type"),
        (dict(UDP_V4, ip_type="ipv4"), "ip_type must be"),
        (dict(UDP_V4, subnet_size=33), "out of range"),
        (dict(UDP_V4, subnet="anywhere"), "not an IP address"),
        ({"ip_type": "v4", "protocol": "icmp", "subnet": "0.0.0.0", "subnet_size": 0,
          "port": "8"}, "TCP/UDP only"),
        (dict(UDP_V4, source="somewhere"), "source must be"),
    ]
    for body, needle in bad:
        _, _, e = c.post(f"/v2/firewalls/{gid}/rules", body, expect=400)
        assert e["error"].startswith("openapi violation: ") and needle in e["error"], \
            (needle, e)
    assert c.get(f"/v2/firewalls/{gid}")[2]["firewall_group"]["rule_count"] == 0
    assert len(c.violations()) == len(bad)


# ----------------------------------------------------------------------------- validation
def test_spec_rejects_invalid_requests(c):
    kid = c.post("/v2/ssh-keys", {"name": "k", "ssh_key": make_pubkey()},
                 expect=201)[2]["ssh_key"]["id"]
    bad = [
        ("POST", "/v2/instances", dict(INSTANCE, os_id="2284"),
         "/os_id: '2284' is not of type 'integer'"),
        ("POST", "/v2/instances", dict(INSTANCE, tags="x"), "'x' is not of type 'array'"),
        ("POST", "/v2/instances", dict(INSTANCE, sshkey_id=kid),
         "is not of type 'array'"),
        ("POST", "/v2/instances", {k: v for k, v in INSTANCE.items() if k != "plan"},
         "'plan' is a required property"),
        ("POST", "/v2/instances", {k: v for k, v in INSTANCE.items() if k != "os_id"},
         "exactly one of os_id, iso_id, snapshot_id, app_id or image_id is required "
         "(got none)"),
        ("POST", "/v2/instances", dict(INSTANCE, snapshot_id="abc"),
         "(got os_id, snapshot_id)"),
        ("POST", "/v2/instances", dict(INSTANCE, user_data="not base64!"),
         "user_data must be base64"),
        ("POST", "/v2/instances", dict(INSTANCE, backups=True), "not of type 'string'"),
        ("POST", "/v2/instances", dict(INSTANCE, backups="yes"), "backups must be"),
        ("POST", "/v2/instances", dict(INSTANCE, disable_public_ipv4=True),
         "requires enable_ipv6"),
        ("POST", "/v2/instances", dict(INSTANCE, enable_ipv6="true"),
         "not of type 'boolean'"),
        ("POST", "/v2/firewalls/x/rules", {k: v for k, v in UDP_V4.items()
                                           if k != "ip_type"},
         "'ip_type' is a required property"),
        ("POST", "/v2/firewalls/x/rules", dict(UDP_V4, port=40000),
         "40000 is not of type 'string'"),
        ("POST", "/v2/firewalls/x/rules", dict(UDP_V4, subnet_size="0"),
         "'0' is not of type 'integer'"),
        ("POST", "/v2/ssh-keys", {"name": "k"}, "'ssh_key' is a required property"),
        ("GET", "/v2/instances?per_page=many", None, "query parameter 'per_page'"),
        ("GET", "/v2/instances?show_pending_charges=maybe", None, "show_pending_charges"),
        ("GET", "/v2/instance", None, "no path in the OpenAPI document"),
        ("PUT", "/v2/instances/abc", {}, "PUT is not defined"),
        ("PATCH", "/v2/instances/abc", {"os_id": 2284}, "not of type 'string'"),
    ]
    for method, path, body, needle in bad:
        st, _, data = c.call(method, path, body)
        assert st == 400, (method, path, st, data)
        assert data["error"].startswith("openapi violation: "), data
        assert needle in data["error"], (needle, data["error"])
    st, _, data = c.call("POST", "/v2/ssh-keys", headers={"Content-Type": "text/plain"},
                         raw_body=b'{"name":"x","ssh_key":"y"}')
    assert st == 400 and "Content-Type" in data["error"]
    st, _, data = c.call("POST", "/v2/ssh-keys", raw_body=b'{"name":')
    assert st == 400 and "not valid JSON" in data["error"]
    state = c.ctl("GET", "state")
    assert state["instances"] == [] and state["firewall_groups"] == []
    viol = c.violations()
    assert len(viol) == len(bad) + 2
    assert all(v["status"] == 400 and v["validation_error"] for v in viol)
    # validation comes before authentication, so a violation shows up without a key too
    assert c.call("GET", "/v2/instances?per_page=0", key=None)[0] == 400
    # deprecated `tag` on its own is fine; undeclared query parameters only warn
    c.get("/v2/instances?tag=x&per_page=10", expect=200)
    c.get("/v2/instances?tags=x", expect=200)
    log = c.ctl("GET", "requests")["requests"]
    assert "query parameter 'tags' is not declared" in log[-1]["warnings"][0]
    # a valid create with every field sfuctl sends is not a violation
    fw = c.post("/v2/firewalls", {"description": "d"}, expect=201)[2]["firewall_group"]
    c.post("/v2/instances", dict(INSTANCE, sshkey_id=[kid], firewall_group_id=fw["id"],
                                 tags=["sfuctl:x"], enable_ipv6=True, backups="disabled",
                                 activation_email=False,
                                 user_data=base64.b64encode(b"#!/bin/sh\n").decode()),
           expect=202)
    assert len(c.violations()) == len(bad) + 3


def test_patches_are_needed_and_work(spec):
    info = spec.load_info
    assert info["sha256_matches_readme"], "the spec file changed: re-check the patches"
    assert all(info["patches"].values()), info["patches"]  # every defect was found
    # 1. dangling $ref: a marketplace apps response can be validated now
    errs = spec.validate_response("GET", "/marketplace/apps", 200,
                                  {"content-type": "application/json"},
                                  json.dumps({"apps": [{"x": 1}], "meta": {"total": 1}})
                                  .encode())
    assert errs == []
    # 2. vcr_region has `in: path` and matches {region}
    r = spec.validate_request("GET", "/registry/abc/replication/ewr")
    assert r.operation_id and r.path_params["region"] == "ewr"
    # 3./4./5. operation ids: spelled right, unique
    assert spec.validate_request("GET", "/registry/r/robot/bot").operation_id == \
        "read-registry-robot"
    assert spec.validate_request("GET", "/cdns/push-zones/z/files/f").operation_id == \
        "get-pushzone-file"
    # 6. undeclared path parameters are declared
    assert spec.validate_request("GET", "/apikeys/k1").path_params == {"apikey-id": "k1"}
    # 8. /v2/-prefixed paths are served once under /v2, not /v2/v2
    assert spec.find("GET", "/policies")[0] is not None
    assert spec.find("GET", "/v2/policies")[0] is None
    # 9. error bodies and 429 are declared for response validation
    assert spec.validate_response("GET", "/instances", 429, {"content-type":
                                  "application/json"}, b'{"error":"x","status":429}') == []
    # 10. prose enums tighten responses
    errs = spec.validate_response("GET", "/instances/x", 200,
                                  {"content-type": "application/json"},
                                  json.dumps({"instance": {"server_status": "booting"}})
                                  .encode())
    assert errs and "booting" in " ".join(errs)
    # without the patches the document cannot even be routed
    doc, _ = load_document(vultr_openapi.default_spec_path())
    with pytest.raises(ValueError, match="without 'in'"):
        OpenAPIValidator(doc)
    # ... and nothing else was relaxed: the raw and patched request schemas are identical
    raw_body = doc["paths"]["/instances"]["post"]["requestBody"]
    assert spec.doc["paths"]["/instances"]["post"]["requestBody"] == raw_body


def test_response_validation_is_not_vacuous(spec):
    errs = spec.validate_response("POST", "/instances", 202,
                                  {"content-type": "application/json"},
                                  json.dumps({"instance": {"ram": "1024"}}).encode())
    assert errs and "not of type 'integer'" in " ".join(errs)
    errs = spec.validate_response("DELETE", "/instances/x", 500,
                                  {"content-type": "application/json"},
                                  json.dumps({"message": "x"}).encode())
    assert errs and "required property" in " ".join(errs)
    errs = spec.validate_response("GET", "/firewalls/g/rules/1", 200,
                                  {"content-type": "application/json"},
                                  json.dumps({"firewall_rule": {"protocol": "UDP"}}).encode())
    assert errs and "'UDP' is not one of" in " ".join(errs)


# ----------------------------------------------------------------------------- faults
def test_injected_faults(c):
    c.ctl("POST", "faults", {"method": "POST", "path_regex": "^/v2/instances$",
                             "status": 429, "count": 2, "retry_after": 2})
    for _ in range(2):
        _, h, body = c.post("/v2/instances", INSTANCE, expect=429)
        assert h["retry-after"] == "2"
        assert body == {"error": "rate limit exceeded", "status": 429}
    c.post("/v2/instances", INSTANCE, expect=202)
    c.get("/v2/instances", expect=200)  # GETs were never matched
    c.ctl("POST", "faults", [{"path_regex": "^/v2/ssh-keys$", "status": 429},
                             {"path_regex": "^/v2/ssh-keys$", "status": 500},
                             {"path_regex": "^/v2/ssh-keys$", "status": 503,
                              "message": "maintenance"}])
    _, h, _ = c.get("/v2/ssh-keys", expect=429)
    assert "retry-after" not in h
    c.get("/v2/ssh-keys", expect=500)
    assert c.get("/v2/ssh-keys", expect=503)[2]["error"] == "maintenance"
    c.get("/v2/ssh-keys", expect=200)
    # dropped connection: no answer at all
    c.ctl("POST", "faults", {"method": "GET", "path_regex": "^/v2/firewalls$", "drop": True})
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        c.raw("GET", "/v2/firewalls")
    c.conn.close()
    c.get("/v2/firewalls", expect=200)
    # delay only, then the normal answer; skip lets the first request through
    c.ctl("POST", "faults", {"path_regex": "^/v2/regions$", "delay": 0.3, "skip": 1})
    t0 = time.monotonic()
    c.get("/v2/regions", expect=200)
    assert time.monotonic() - t0 < 0.25
    t0 = time.monotonic()
    c.get("/v2/regions", expect=200)
    assert time.monotonic() - t0 >= 0.3
    faults = c.ctl("GET", "faults")["faults"]
    assert [f["hits"] for f in faults] == [2, 1, 1, 1, 1, 1]
    log = c.ctl("GET", "requests")["requests"]
    assert [e["status"] for e in log if e["path"] == "/v2/firewalls"] == [None, 200]
    # invalid requests never consume a fault
    c.ctl("POST", "faults", {"path_regex": "^/v2/instances$", "status": 500})
    c.post("/v2/instances", {"plan": "x"}, expect=400)
    c.ctl("DELETE", "faults")
    c.get("/v2/instances", expect=200)


def test_rate_limit(c):
    c.ctl("POST", "config", {"enforce_rate_limits": True})
    statuses = []
    for _ in range(40):
        st, h, body = c.raw("GET", "/v2/regions")
        statuses.append(st)
        if st == 429:
            assert h["retry-after"] == "1"
            assert json.loads(body) == {"error": "rate limit exceeded", "status": 429}
    assert statuses[:30] == [200] * 30 and 429 in statuses[30:]
    time.sleep(1.05)
    c.get("/v2/regions", expect=200)
    c.ctl("POST", "config", {"enforce_rate_limits": False})


# ----------------------------------------------------------------------------- process
MOCK_FRESHVM = textwrap.dedent('''
    import json, os
    LOG = os.environ["MOCK_FRESHVM_LOG"]
    def _log(*a):
        with open(LOG, "a") as f:
            f.write(json.dumps(a) + "\\n")
    class FreshVms:
        def __init__(self, owner_pid=None):
            _log("init", owner_pid)
            self.n = 0
        def boot(self, name, user_data, public_keys, login_user):
            self.n += 1
            _log("boot", name, user_data.decode() if user_data else None,
                 public_keys, login_user)
            return "10.250.0.%d" % (self.n + 1)
        def destroy(self, name):
            _log("destroy", name)
        def destroy_all(self):
            _log("destroy_all")
''')


def test_boot_vms_with_mock_freshvm(spec):
    tmp = tempfile.mkdtemp(prefix="vultr-mockvm-")
    with open(os.path.join(tmp, "mock_freshvm.py"), "w") as f:
        f.write(MOCK_FRESHVM)
    log_path = os.path.join(tmp, "calls.jsonl")
    env = dict(os.environ, PYTHONPATH=tmp, MOCK_FRESHVM_LOG=log_path)
    proc, port, ftmp, flog = start_fake(["--boot-vms", "--freshvm-module", "mock_freshvm",
                                         "--boot-delay", "0.3"], env=env)
    try:
        c = Client(port, spec)
        pub = make_pubkey(b"vm")
        kid = c.post("/v2/ssh-keys", {"name": "k", "ssh_key": pub},
                     expect=201)[2]["ssh_key"]["id"]
        ud = "#cloud-config\nruncmd: [touch /ok]\n"
        inst = c.post("/v2/instances", dict(INSTANCE, sshkey_id=[kid], user_data=base64
                                            .b64encode(ud.encode()).decode()),
                      expect=202)[2]["instance"]
        assert inst["main_ip"] == "0.0.0.0"  # no address pool needed with --boot-vms
        act = wait_for(lambda: (lambda i: i if i["status"] == "active" else None)(
            c.get(f"/v2/instances/{inst['id']}")[2]["instance"]))
        assert act["main_ip"] == "10.250.0.2"
        c.delete(f"/v2/instances/{inst['id']}", expect=204)
        assert c.violations() == []
        c.conn.close()
    finally:
        rc = stop_fake(proc, ftmp, flog)
    calls = [json.loads(x) for x in open(log_path)]
    shutil.rmtree(tmp, ignore_errors=True)
    name = f"vultr-{inst['id'][:8]}"
    assert calls[0][0] == "init" and calls[0][1] == proc.pid
    assert calls[1] == ["boot", name, ud, [pub], "root"]
    assert calls[2] == ["destroy", name]
    assert calls[-1] == ["destroy_all"] and rc == 0


def test_exit_with_parent_and_port_file():
    tmp = tempfile.mkdtemp(prefix="vultr-parent-")
    port_file = os.path.join(tmp, "port")
    pid_file = os.path.join(tmp, "pid")
    # a parent shell starts the fake, waits for the port file, then exits
    script = (f"{PY} {os.path.join(HERE, 'server.py')} --port-file {port_file} "
              f"--exit-with-parent >/dev/null 2>&1 & echo $! > {pid_file}; "
              f"while [ ! -s {port_file} ]; do sleep 0.05; done")
    subprocess.run(["sh", "-c", script], timeout=20, check=True)
    pid = int(open(pid_file).read())
    assert int(open(port_file).read()) > 0
    assert [f for f in os.listdir(tmp) if f.endswith(".tmp")] == []  # written atomically
    gone = wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                    open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=5)
    shutil.rmtree(tmp, ignore_errors=True)
    assert gone, "fake outlived its parent"


def test_missing_deps_message_names_installer():
    r = subprocess.run([PY, "-S", "-I", os.path.join(HERE, "server.py"), "--port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "scripts/testbed/fake-deps" in (r.stdout + r.stderr)


def test_validator_speed(spec):
    body = json.dumps(dict(INSTANCE, tags=["a"], sshkey_id=["k"], enable_ipv6=True,
                           user_data="eA==")).encode()
    t0 = time.perf_counter()
    n = 200
    for _ in range(n):
        r = spec.validate_request("POST", "/instances", "",
                                  {"content-type": "application/json"}, body)
        assert r.ok
    per = (time.perf_counter() - t0) / n * 1000
    print(f"\nspec load {spec.load_info['load_seconds']}s, init {spec.init_seconds}s; "
          f"POST /instances validation {per:.2f} ms/request")
    assert per < 20
