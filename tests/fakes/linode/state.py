"""In-memory state of the fake Linode account (instances, firewalls, devices, SSH keys).

All methods are called with `FakeState.lock` held by the HTTP layer. Time-based
transitions (instance provisioning -> booting -> running) are applied lazily by
`tick()` at the start of every request, so a request always sees a consistent view.
Timestamps are Linode's: UTC without an offset, `2024-01-01T00:01:01`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import ipaddress
import itertools
import json
import math
import re
import threading
import time
from datetime import datetime, timezone


class ApiError(Exception):
    """A Linode error answer: {"errors":[{"field"?, "reason"}]}."""

    def __init__(self, status: int, reason: str, field: str | None = None,
                 headers: dict | None = None, errors: list | None = None):
        super().__init__(reason)
        self.status = status
        self.errors = errors or [{"reason": reason, **({"field": field} if field else {})}]
        self.headers = headers or {}

    def body(self) -> dict:
        return {"errors": self.errors}


def not_found() -> ApiError:
    return ApiError(404, "Not found")


def bad(reason: str, field: str | None = None) -> ApiError:
    return ApiError(400, reason, field)


def ts(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- catalog
CATALOG_CREATED = 1735689600.0  # 2025-01-01T00:00:00
FULL_CAPS = ["Linodes", "Block Storage", "Cloud Firewall", "Vlans", "VPCs", "Metadata",
             "Placement Group", "Block Storage Encryption"]
# id, label, country, capabilities; us-southeast lacks "Metadata" (for tests of that path)
_REGIONS = [
    ("us-east", "Newark, NJ", "us", FULL_CAPS),
    ("us-ord", "Chicago, IL", "us", FULL_CAPS),
    ("eu-central", "Frankfurt, DE", "de", FULL_CAPS),
    ("ap-south", "Singapore, SG", "sg", FULL_CAPS),
    ("br-gru", "Sao Paulo, BR", "br", FULL_CAPS),
    ("us-southeast", "Atlanta, GA", "us",
     [c for c in FULL_CAPS if c not in ("Metadata", "Placement Group")]),
]
# id, label, class, vcpus, memory MB, disk MB, transfer GB, network_out Mbps, monthly USD
_TYPES = [
    ("g6-nanode-1", "Nanode 1GB", "nanode", 1, 1024, 25600, 1000, 1000, 5.0),
    ("g6-standard-1", "Linode 2GB", "standard", 1, 2048, 51200, 2000, 2000, 12.0),
    ("g6-standard-2", "Linode 4GB", "standard", 2, 4096, 81920, 4000, 4000, 24.0),
    ("g6-standard-4", "Linode 8GB", "standard", 4, 8192, 163840, 5000, 5000, 48.0),
    ("g6-dedicated-2", "Dedicated 4GB", "dedicated", 2, 4096, 81920, 4000, 4000, 36.0),
    ("g6-dedicated-4", "Dedicated 8GB", "dedicated", 4, 8192, 163840, 5000, 5000, 72.0),
]
REGION_PRICE_FACTOR = {"br-gru": 1.4}  # some regions cost more; region_prices override
# id, label, vendor, capabilities, deprecated
_IMAGES = [
    ("linode/ubuntu24.04", "Ubuntu 24.04 LTS", "Ubuntu", ["cloud-init"], False),
    ("linode/ubuntu22.04", "Ubuntu 22.04 LTS", "Ubuntu", ["cloud-init"], False),
    ("linode/debian12", "Debian 12", "Debian", ["cloud-init"], False),
    ("linode/debian11", "Debian 11", "Debian", ["cloud-init"], True),
    ("linode/alpine3.19", "Alpine 3.19", "Alpine", [], False),  # no cloud-init
]
LOGIN_USER = "root"


def region_obj(rid: str) -> dict | None:
    for i, (r, label, country, caps) in enumerate(_REGIONS):
        if r == rid:
            return {
                "id": r, "label": label, "country": country, "capabilities": list(caps),
                "status": "ok", "site_type": "core",
                # documentation addresses (RFC 5737 / 3849): never a real resolver
                "resolvers": {"ipv4": f"192.0.2.{10 + i},192.0.2.{40 + i}",
                              "ipv6": f"2001:db8:53::{i + 1},2001:db8:53::{i + 101}"},
                "placement_group_limits": {"maximum_linodes_per_pg": 5,
                                           "maximum_pgs_per_customer": None},
            }
    return None


def all_regions() -> list[dict]:
    return [region_obj(r[0]) for r in _REGIONS]


def type_obj(tid: str) -> dict | None:
    for t, label, cls, vcpus, mem, disk, transfer, net, monthly in _TYPES:
        if t == tid:
            def price(m):
                return {"hourly": round(m / 730.0, 4), "monthly": m}
            return {
                "id": t, "label": label, "class": cls, "vcpus": vcpus, "memory": mem,
                "disk": disk, "transfer": transfer, "network_out": net, "gpus": 0,
                "successor": None, "price": price(monthly),
                "region_prices": [dict(price(round(monthly * f, 2)), id=r)
                                  for r, f in REGION_PRICE_FACTOR.items()],
                "addons": {"backups": {
                    "price": price(round(monthly / 5, 2)),
                    "region_prices": [dict(price(round(monthly / 5 * f, 2)), id=r)
                                      for r, f in REGION_PRICE_FACTOR.items()]}},
            }
    return None


def all_types() -> list[dict]:
    return [type_obj(t[0]) for t in _TYPES]


def image_obj(iid: str) -> dict | None:
    for i, label, vendor, caps, deprecated in _IMAGES:
        if i == iid:
            return {
                "id": i, "label": label, "description": f"{label} (official image)", "created": ts(CATALOG_CREATED),
                "updated": ts(CATALOG_CREATED), "created_by": "linode",
                "deprecated": deprecated, "is_public": True, "size": 2500,
                "total_size": 2500, "type": "manual", "vendor": vendor,
                "status": "available", "capabilities": list(caps),
                "eol": "2029-04-01T04:00:00", "expiry": None, "tags": [], "regions": [],
            }
    return None


def all_images() -> list[dict]:
    return [image_obj(i[0]) for i in _IMAGES]


# --------------------------------------------------------------------------- helpers
LABEL_RE = re.compile(r"^[a-zA-Z]((?!--|__|\.\.)[a-zA-Z0-9-_.])+$")
SSH_KEY_RE = re.compile(
    r"^(ssh-rsa|ssh-dss|ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|"
    r"sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) "
    r"([A-Za-z0-9+/]+={0,3})( .*)?$")
COMMON_PASSWORDS = {"password", "password1", "password123", "123456", "12345678",
                    "qwerty", "letmein", "welcome", "admin", "changeme", "iloveyou",
                    "passw0rd", "p@ssw0rd", "p@ssword", "linode", "root"}


def password_strength_ok(pw: str) -> bool:
    """An approximation of Linode's server-side strength score (zxcvbn-like): enough
    estimated entropy from length x character classes, enough distinct characters, and
    not a common password. A long random password always passes."""
    if pw.lower() in COMMON_PASSWORDS:
        return False
    pool = sum(n for rx, n in ((r"[a-z]", 26), (r"[A-Z]", 26), (r"[0-9]", 10),
                               (r"[^a-zA-Z0-9]", 33)) if re.search(rx, pw))
    distinct = len(set(pw))
    bits = min(len(pw), distinct * 2) * math.log2(max(pool, 2))
    return distinct >= 6 and bits >= 50


def check_ssh_key(key: str) -> bool:
    m = SSH_KEY_RE.match(key.strip())
    if not m:
        return False
    try:
        blob = base64.b64decode(m.group(3), validate=True)
    except (ValueError, binascii.Error):
        return False
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    return blob[4:4 + n].decode("ascii", "replace") == m.group(1)


def parse_pool_entry(entry: str) -> dict:
    """'10.200.101.2', '10.200.101.2/30' or '10.200.101.2/24@10.200.101.1'."""
    entry = entry.strip()
    gw = None
    if "@" in entry:
        entry, gw = entry.split("@", 1)
    if "/" not in entry:
        entry += "/24"
    iface = ipaddress.IPv4Interface(entry)
    if gw is None:
        hosts = list(itertools.islice(iface.network.hosts(), 2))
        gw_ip = hosts[0] if hosts and hosts[0] != iface.ip else (
            hosts[1] if len(hosts) > 1 else iface.ip)
        gw = str(gw_ip)
    ipaddress.IPv4Address(gw)
    return {"address": str(iface.ip), "prefix": iface.network.prefixlen,
            "subnet_mask": str(iface.netmask), "gateway": gw}


def parse_ports(ports: str, where: str) -> None:
    """Linode's rules: '80', '22-24, 80, 443'; at most 15 pieces (a range counts as 2);
    1-65535, no leading zeros."""
    pieces = [p.strip() for p in ports.split(",")]
    count = 0
    for p in pieces:
        m = re.fullmatch(r"([1-9]\d{0,4})(?:-([1-9]\d{0,4}))?", p)
        if not m:
            raise bad(f"Invalid port range: {p!r}. Ports must be a single port, a "
                      "range 'a-b', or a comma separated list of those; no leading "
                      "zeros", where)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or lo > hi:
            raise bad(f"Invalid port range: {p!r}. Ports must be between 1 and 65535",
                      where)
        count += 2 if m.group(2) else 1
    if count > 15:
        raise bad("Too many ports: at most 15 pieces, a range counts as 2", where)


MAX_RULES = 25
MAX_ADDRESSES = 255


class FakeState:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.boot_delay = float(cfg.boot_delay)
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self, pool: list[str] | None = None) -> None:
        self.instances: dict[int, dict] = {}
        self.firewalls: dict[int, dict] = {}
        self.devices: dict[int, dict] = {}  # device id -> {firewall_id, linode_id, ...}
        self.keys: dict[int, dict] = {}
        self.in_use: dict[str, int] = {}  # ipv4 -> linode id
        self.reserved_labels: set[str] = set()
        self.pool: list[dict] = []
        self.set_pool(self.cfg.address_pool if pool is None else pool, replace=True)
        self._linode_ids = itertools.count(60000001)
        self._fw_ids = itertools.count(10001)
        self._dev_ids = itertools.count(20001)
        self._key_ids = itertools.count(30001)
        self._v6_seq = itertools.count(1)

    def set_pool(self, entries: list[str], replace: bool) -> None:
        parsed = [parse_pool_entry(e) for e in entries if e.strip()]
        if replace:
            self.pool = []
        for p in parsed:
            if p["address"] in self.in_use or any(
                    x["address"] == p["address"] for x in self.pool):
                continue
            self.pool.append(p)

    def pool_view(self) -> dict:
        return {"available": [p["address"] for p in self.pool],
                "available_detail": copy.deepcopy(self.pool), "in_use": dict(self.in_use)}

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for i in self.instances.values():
            if i["status"] == "provisioning" and now >= i["_booting_at"]:
                i["status"] = "booting" if i["_booted"] else "offline"
                i["updated"] = ts(i["_booting_at"])
            if i["status"] == "booting" and now >= i["_running_at"]:
                i["status"] = "running"
                i["updated"] = ts(i["_running_at"])

    # ------------------------------------------------------------------ profile / keys
    def profile(self) -> dict:
        return {
            "uid": 1234567, "username": "sfuctl-fake", "email": "sfuctl-fake@example.com",
            "timezone": "UTC", "email_notifications": True, "ip_whitelist_enabled": False,
            "lish_auth_method": "keys_only", "authorized_keys": None,
            "two_factor_auth": False, "restricted": False,
            "authentication_type": "password", "verified_phone_number": None,
            "referrals": {"code": "sfuctlfake", "url": "https://www.linode.com/?r=sfuctl",
                          "total": 0, "completed": 0, "pending": 0, "credit": 0},
        }

    def create_key(self, body: dict) -> dict:
        key = (body.get("ssh_key") or "").strip()
        if not check_ssh_key(key):
            raise bad("SSH Key key-type must be ssh-dss, ssh-rsa, ecdsa-sha2-nistp, "
                      "ssh-ed25519, sk-ecdsa-sha2-nistp256, or sk-ssh-ed25519", "ssh_key")
        kid = next(self._key_ids)
        k = {"id": kid, "label": body.get("label") or "", "ssh_key": key,
             "created": ts(time.time())}
        self.keys[kid] = k
        return k

    def get_key(self, kid: int) -> dict:
        if kid not in self.keys:
            raise not_found()
        return self.keys[kid]

    # ------------------------------------------------------------------ instances
    def prepare_instance(self, body: dict) -> dict:
        """Checks a create body and reserves the label; returns the plan for commit.
        Raises ApiError (400) with Linode's field names."""
        region = region_obj(body.get("region"))
        if region is None:
            raise bad("region is not valid", "region")
        typ = type_obj(body.get("type"))
        if typ is None:
            raise bad("A valid plan type by that ID was not found", "type")
        image_id = body.get("image")
        image = None
        if image_id is not None:
            image = image_obj(image_id)
            if image is None:
                raise bad(f"Image '{image_id}' not found", "image")
            if "root_pass" not in body:
                raise bad("root_pass is required when deploying from an Image", "root_pass")
            if not password_strength_ok(body["root_pass"]):
                raise bad("Password does not meet strength requirement.", "root_pass")
        elif body.get("authorized_keys") or body.get("metadata"):
            raise bad("An image is required to use authorized_keys or metadata", "image")
        if body.get("stackscript_id") or body.get("backup_id"):
            raise bad("the fake does not implement StackScripts or backups", "stackscript_id"
                      if body.get("stackscript_id") else "backup_id")
        if body.get("interfaces"):
            raise bad("the fake does not implement interfaces (VPC/VLAN); leave them out "
                      "to get the default public interface", "interfaces")
        if body.get("private_ip"):
            raise bad("the fake hands out no private IPv4 addresses (a made-up 192.168.x "
                      "address could be used by mistake)", "private_ip")
        if body.get("placement_group"):
            raise bad("the fake does not implement placement groups", "placement_group")
        label = body.get("label")
        if label is not None:
            if label in self.reserved_labels or any(
                    i["label"] == label for i in self.instances.values()):
                raise bad("Label must be unique among your linodes", "label")
        for n, k in enumerate(body.get("authorized_keys") or []):
            if not check_ssh_key(k):
                raise bad("SSH Key key-type must be ssh-dss, ssh-rsa, ecdsa-sha2-nistp, "
                          "ssh-ed25519, sk-ecdsa-sha2-nistp256, or sk-ssh-ed25519",
                          f"authorized_keys[{n}]")
        if body.get("authorized_users"):
            raise bad("the fake has no users with keys; send authorized_keys instead",
                      "authorized_users")
        for n, t in enumerate(body.get("tags") or []):
            if not (3 <= len(t) <= 50):
                raise bad("Length must be 3-50 characters", f"tags[{n}]")
        user_data = None
        md = body.get("metadata")
        if md is not None and "user_data" in md:
            try:
                user_data = base64.b64decode(md["user_data"], validate=True)
            except (ValueError, binascii.Error):
                raise bad("user_data must be valid base64", "metadata.user_data")
            if len(user_data) > 65535:
                raise bad("user_data must not exceed 65535 bytes before encoding",
                          "metadata.user_data")
            if "Metadata" not in region["capabilities"]:
                raise bad(f"Metadata is not supported in region {region['id']}",
                          "metadata")
            if image is None or "cloud-init" not in image["capabilities"]:
                raise bad(f"Image {image_id} does not support Metadata (no cloud-init "
                          "capability)", "metadata")
        fw = None
        if body.get("firewall_id") is not None:
            fw = self.firewalls.get(body["firewall_id"])
            if fw is None:
                raise bad(f"Firewall {body['firewall_id']} not found", "firewall_id")
        if not self.cfg.boot_vms and not self.pool:
            raise bad("fake address pool exhausted: no public IPv4 address left to assign "
                      "(add some with --address-pool or POST /_fake/address-pool)", "region")
        lid = next(self._linode_ids)
        label = label or f"linode{lid}"
        self.reserved_labels.add(label)
        return {"id": lid, "label": label, "region": region, "type": typ, "image": image,
                "user_data": user_data, "firewall": fw, "body": body}

    def release(self, plan: dict) -> None:
        self.reserved_labels.discard(plan["label"])

    def commit_instance(self, plan: dict, vm_ipv4: str | None) -> dict:
        """Creates the instance; vm_ipv4 is the address of a booted VM (--boot-vms)."""
        self.release(plan)
        body, lid, typ, region = plan["body"], plan["id"], plan["type"], plan["region"]
        if vm_ipv4 is not None:
            v4 = parse_pool_entry(vm_ipv4)
        else:
            if not self.pool:
                raise bad("fake address pool exhausted: no public IPv4 address left to "
                          "assign (add some with --address-pool or POST "
                          "/_fake/address-pool)", "region")
            v4 = self.pool.pop(0)
        self.in_use[v4["address"]] = lid
        n = next(self._v6_seq)
        now = time.time()
        booted = body.get("booted", True) and plan["image"] is not None
        inst = {
            "id": lid, "label": plan["label"], "group": body.get("group", ""),
            "status": "provisioning", "created": ts(now), "updated": ts(now),
            "type": typ["id"], "region": region["id"],
            "image": plan["image"]["id"] if plan["image"] else None,
            "ipv4": [v4["address"]],
            # SLAAC from the documentation prefix 2001:db8::/32
            "ipv6": f"2001:db8:{n:x}::f03c:91ff:fe00:{n:x}/128",
            "specs": {"disk": typ["disk"], "memory": typ["memory"], "vcpus": typ["vcpus"],
                      "gpus": 0, "transfer": typ["transfer"]},
            "alerts": {"cpu": 90 * typ["vcpus"], "io": 10000, "network_in": 10,
                       "network_out": 10, "transfer_quota": 80},
            "backups": {"available": False, "enabled": bool(body.get("backups_enabled")),
                        "last_successful": None,
                        "schedule": {"day": "Scheduling", "window": "Scheduling"}},
            "hypervisor": "kvm", "watchdog_enabled": True,
            "tags": list(dict.fromkeys(body.get("tags") or [])),
            "host_uuid": hashlib.sha1(f"host-{lid}".encode()).hexdigest(),
            "has_user_data": plan["user_data"] is not None,
            "placement_group": None, "lke_cluster_id": None, "capabilities": [],
            # private: not in API responses, visible in /_fake/state
            "_v4": v4, "_v6_seq": n, "_booted": booted, "_vm": vm_ipv4 is not None,
            "_booting_at": now + self.boot_delay / 2, "_running_at": now + self.boot_delay,
            "_user_data": plan["user_data"],
            "_authorized_keys": list(body.get("authorized_keys") or []),
            "_request": {k: ("<redacted>" if k == "root_pass" else copy.deepcopy(v))
                         for k, v in body.items()},
        }
        self.instances[lid] = inst
        if plan["firewall"] is not None:
            fw = self.firewalls.get(plan["firewall"]["id"])
            if fw is not None:
                self._attach(fw, lid)
        return inst

    @staticmethod
    def instance_view(i: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in i.items() if not k.startswith("_")}

    def get_instance(self, lid: int) -> dict:
        i = self.instances.get(lid)
        if i is None:
            raise not_found()
        return i

    def update_instance(self, lid: int, body: dict) -> dict:
        i = self.get_instance(lid)
        if "label" in body and body["label"] != i["label"]:
            if any(x["label"] == body["label"] for x in self.instances.values()):
                raise bad("Label must be unique among your linodes", "label")
            i["label"] = body["label"]
        if "tags" in body:
            i["tags"] = list(dict.fromkeys(body["tags"]))
        for k in ("group", "watchdog_enabled"):
            if k in body:
                i[k] = body[k]
        if "alerts" in body:
            i["alerts"].update(body["alerts"])
        i["updated"] = ts(time.time())
        return i

    def delete_instance(self, lid: int) -> dict:
        i = self.get_instance(lid)
        del self.instances[lid]
        self.in_use.pop(i["_v4"]["address"], None)
        if not i["_vm"]:
            self.pool.append(i["_v4"])
        for did in [d for d, dev in self.devices.items() if dev["linode_id"] == lid]:
            self._detach(did)
        return i

    def instance_ips(self, i: dict) -> dict:
        v4 = i["_v4"]
        n = i["_v6_seq"]
        slaac = i["ipv6"].split("/")[0]
        return {
            "ipv4": {
                "public": [{"address": v4["address"], "gateway": v4["gateway"],
                            "subnet_mask": v4["subnet_mask"], "prefix": v4["prefix"],
                            "type": "ipv4", "public": True,
                            "rdns": v4["address"].replace(".", "-") + ".ip.linodeusercontent.com",
                            "linode_id": i["id"], "region": i["region"]}],
                "private": [], "shared": [], "reserved": [], "vpc": [],
            },
            "ipv6": {
                "slaac": {"address": slaac, "gateway": "fe80::1",
                          "subnet_mask": "ffff:ffff:ffff:ffff::", "prefix": 64,
                          "type": "ipv6", "public": True, "rdns": None,
                          "linode_id": i["id"], "region": i["region"]},
                "link_local": {"address": f"fe80::f03c:91ff:fe00:{n:x}", "gateway": "fe80::1",
                               "subnet_mask": "ffff:ffff:ffff:ffff::", "prefix": 64,
                               "type": "ipv6", "public": False, "rdns": None,
                               "linode_id": i["id"], "region": i["region"]},
                "global": [],
            },
        }

    def instance_firewalls(self, lid: int) -> list[dict]:
        self.get_instance(lid)
        ids = {d["firewall_id"] for d in self.devices.values() if d["linode_id"] == lid}
        return [self.firewalls[f] for f in sorted(ids)]

    # ------------------------------------------------------------------ firewalls
    def _check_rules(self, rules: dict, base: dict | None) -> dict:
        out = copy.deepcopy(base) if base else {"inbound": [], "outbound": [],
                                                "inbound_policy": None,
                                                "outbound_policy": None}
        for side in ("inbound", "outbound"):
            if side not in rules:
                continue
            checked = []
            for n, r in enumerate(rules[side] or []):
                where = f"rules.{side}[{n}]"
                proto = r["protocol"]
                ports = r.get("ports")
                if proto in ("ICMP", "IPENCAP"):
                    if ports not in (None, ""):
                        raise bad(f"Ports are not allowed for {proto} protocols",
                                  f"{where}.ports")
                elif ports is not None:
                    parse_ports(ports, f"{where}.ports")
                addrs = r.get("addresses") or {}
                if not addrs or not any(k in addrs for k in ("ipv4", "ipv6")):
                    raise bad("Must contain ipv4 or ipv6 addresses", f"{where}.addresses")
                total = 0
                for fam, cls in (("ipv4", ipaddress.IPv4Network),
                                 ("ipv6", ipaddress.IPv6Network)):
                    if fam not in addrs:
                        continue
                    if not addrs[fam]:
                        raise bad(f"{fam} must not be an empty list",
                                  f"{where}.addresses.{fam}")
                    for a in addrs[fam]:
                        try:
                            cls(a, strict=False)
                        except ValueError:
                            raise bad(f"Invalid {fam} address or range: {a!r}",
                                      f"{where}.addresses.{fam}")
                    total += len(addrs[fam])
                if total > MAX_ADDRESSES:
                    raise bad(f"Too many addresses: at most {MAX_ADDRESSES} per rule",
                              f"{where}.addresses")
                rule = {"protocol": proto, "action": r["action"],
                        "addresses": {k: list(v) for k, v in addrs.items()}}
                if ports is not None and proto not in ("ICMP", "IPENCAP"):
                    rule["ports"] = ports
                for k in ("label", "description"):
                    if k in r:
                        rule[k] = r[k]
                checked.append(rule)
            out[side] = checked
        for k in ("inbound_policy", "outbound_policy"):
            if k in rules:
                out[k] = rules[k]
        if len(out["inbound"]) + len(out["outbound"]) > MAX_RULES:
            raise bad(f"Too many rules: a Firewall may have at most {MAX_RULES} inbound "
                      "and outbound rules together", "rules")
        return out

    @staticmethod
    def _fingerprint(rules: dict) -> str:
        canon = json.dumps({k: rules[k] for k in ("inbound", "outbound", "inbound_policy",
                                                   "outbound_policy")}, sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:8]

    def _set_rules(self, fw: dict, rules: dict) -> None:
        fw["rules"] = dict(rules)
        fw["_version"] += 1
        fw["_history"].append({"version": fw["_version"], "rules": copy.deepcopy(rules)})
        fw["updated"] = ts(time.time())

    def _check_label(self, label: str, fid: int | None) -> None:
        if any(f["label"] == label and f["id"] != fid for f in self.firewalls.values()):
            raise bad("Label must be unique among your Cloud Firewalls", "label")

    def create_firewall(self, body: dict) -> dict:
        self._check_label(body["label"], None)
        rules = self._check_rules(body["rules"], None)
        devices = body.get("devices") or {}
        if devices.get("nodebalancers"):
            raise bad("the fake does not implement NodeBalancers", "devices.nodebalancers")
        linodes = list(dict.fromkeys(devices.get("linodes") or []))
        for n, lid in enumerate(linodes):
            if lid not in self.instances:
                raise bad(f"Linode {lid} not found", f"devices.linodes[{n}]")
            self._check_free(lid, f"devices.linodes[{n}]")
        now = time.time()
        fid = next(self._fw_ids)
        fw = {"id": fid, "label": body["label"], "status": "enabled",
              "created": ts(now), "updated": ts(now),
              "tags": list(dict.fromkeys(body.get("tags") or [])),
              "rules": {}, "_version": 0, "_history": []}
        self._set_rules(fw, rules)
        self.firewalls[fid] = fw
        for lid in linodes:
            self._attach(fw, lid)
        return fw

    def fw_view(self, fw: dict) -> dict:
        v = {k: copy.deepcopy(fw[k]) for k in ("id", "label", "status", "created",
                                                "updated", "tags")}
        v["rules"] = self.rules_view(fw)
        return v

    def rules_view(self, fw: dict) -> dict:
        r = copy.deepcopy(fw["rules"])
        r["version"] = fw["_version"]
        r["fingerprint"] = self._fingerprint(fw["rules"])
        return r

    def get_firewall(self, fid: int) -> dict:
        fw = self.firewalls.get(fid)
        if fw is None:
            raise not_found()
        return fw

    def update_firewall(self, fid: int, body: dict) -> dict:
        fw = self.get_firewall(fid)
        if "label" in body:
            self._check_label(body["label"], fid)
            fw["label"] = body["label"]
        if "tags" in body:
            fw["tags"] = list(dict.fromkeys(body["tags"]))
        if "status" in body:
            if body["status"] not in ("enabled", "disabled"):
                raise bad("status must be enabled or disabled", "status")
            fw["status"] = body["status"]
        fw["updated"] = ts(time.time())
        return fw

    def replace_rules(self, fid: int, body: dict) -> dict:
        """PUT .../rules: every list or policy given replaces the current one."""
        fw = self.get_firewall(fid)
        self._set_rules(fw, self._check_rules(body, fw["rules"]))
        return fw

    def delete_firewall(self, fid: int) -> None:
        self.get_firewall(fid)
        for did in [d for d, dev in self.devices.items() if dev["firewall_id"] == fid]:
            self._detach(did)
        del self.firewalls[fid]

    # ------------------------------------------------------------------ devices
    def _check_free(self, lid: int, field: str) -> None:
        for d in self.devices.values():
            if d["linode_id"] == lid:
                raise bad(f"Linode {lid} already belongs to Firewall {d['firewall_id']}; "
                          "a Linode can have only one Firewall", field)

    def _attach(self, fw: dict, lid: int) -> dict:
        now = time.time()
        did = next(self._dev_ids)
        dev = {"id": did, "firewall_id": fw["id"], "linode_id": lid,
               "created": ts(now), "updated": ts(now)}
        self.devices[did] = dev
        return dev

    def _detach(self, did: int) -> None:
        self.devices.pop(did, None)

    def add_device(self, fid: int, body: dict) -> dict:
        fw = self.get_firewall(fid)
        if body["type"] != "linode":
            raise bad("the fake does not implement NodeBalancers", "type")
        lid = body["id"]
        if lid not in self.instances:
            raise bad(f"Linode {lid} not found", "id")
        self._check_free(lid, "id")
        return self._attach(fw, lid)

    def device_view(self, dev: dict, base: str = "") -> dict:
        i = self.instances.get(dev["linode_id"])
        return {"id": dev["id"], "created": dev["created"], "updated": dev["updated"],
                "entity": {"id": dev["linode_id"], "type": "linode",
                           "label": i["label"] if i else None,
                           "url": f"/v4/linode/instances/{dev['linode_id']}"}}

    def fw_devices(self, fid: int) -> list[dict]:
        self.get_firewall(fid)
        return [d for d in self.devices.values() if d["firewall_id"] == fid]

    def get_device(self, fid: int, did: int) -> dict:
        self.get_firewall(fid)
        d = self.devices.get(did)
        if d is None or d["firewall_id"] != fid:
            raise not_found()
        return d

    # ------------------------------------------------------------------ dump
    def dump(self) -> dict:
        insts = []
        for i in sorted(self.instances.values(), key=lambda x: x["id"]):
            v = self.instance_view(i)
            ud = i["_user_data"]
            v["_fake"] = {
                "booting_at": ts(i["_booting_at"]), "running_at": ts(i["_running_at"]),
                "user_data": ud.decode("utf-8", "replace") if ud is not None else None,
                "authorized_keys": i["_authorized_keys"], "reserved_ipv4": i["_v4"],
                "vm": i["_vm"], "create_request": i["_request"],
            }
            insts.append(v)
        return {
            "instances": insts,
            "firewalls": [dict(self.fw_view(f), devices=[
                self.device_view(d) for d in self.fw_devices(f["id"])])
                for f in self.firewalls.values()],
            "ssh_keys": list(self.keys.values()),
            "address_pool": self.pool_view(),
            "config": {"boot_delay": self.boot_delay, "page_size": self.cfg.page_size,
                       "boot_vms": bool(self.cfg.boot_vms),
                       "create_rate_limit": self.cfg.create_rate_limit},
        }
