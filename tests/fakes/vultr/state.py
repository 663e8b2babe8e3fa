"""In-memory state of the fake Vultr account: instances, SSH keys, firewall groups and
rules, the address pool, and the catalog (regions, plans, OS images).

All methods are called with `FakeState.lock` held by the HTTP layer. Instance phases
(pending -> active, server_status none -> locked -> installingbooting -> ok, main_ip
0.0.0.0 -> the pool address) are derived from the clock whenever an instance is viewed,
so every request sees a consistent picture without a background thread.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import itertools
import secrets
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any


class ApiError(Exception):
    """An answer in Vultr's error shape: {"error": message, "status": status}."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


def bad_request(msg: str) -> ApiError:
    return ApiError(400, msg)


def vtime(ts: float) -> str:
    """Vultr's date format: 2021-09-14T13:22:20+00:00."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# --------------------------------------------------------------------------- catalog
# id, city, country, continent
REGIONS = [
    ("ewr", "New Jersey", "US", "North America"),
    ("ord", "Chicago", "US", "North America"),
    ("dfw", "Dallas", "US", "North America"),
    ("sea", "Seattle", "US", "North America"),
    ("lax", "Los Angeles", "US", "North America"),
    ("atl", "Atlanta", "US", "North America"),
    ("sjc", "Silicon Valley", "US", "North America"),
    ("yto", "Toronto", "CA", "North America"),
    ("ams", "Amsterdam", "NL", "Europe"),
    ("lhr", "London", "GB", "Europe"),
    ("fra", "Frankfurt", "DE", "Europe"),
    ("cdg", "Paris", "FR", "Europe"),
    ("nrt", "Tokyo", "JP", "Asia"),
    ("sgp", "Singapore", "SG", "Asia"),
    ("syd", "Sydney", "AU", "Australia"),
]
REGION_OPTIONS = ["ddos_protection", "block_storage_storage_opt", "load_balancers",
                  "kubernetes"]
ALL_REGION_IDS = [r[0] for r in REGIONS]

# id, type, vcpu, ram MB, disk GB, bandwidth GB, monthly USD, regions (None = all)
PLANS = [
    ("vc2-1c-1gb", "vc2", 1, 1024, 25, 1024, 5.0, None),
    ("vc2-1c-2gb", "vc2", 1, 2048, 55, 2048, 10.0, None),
    ("vc2-2c-4gb", "vc2", 2, 4096, 80, 3072, 20.0, None),
    ("vc2-4c-8gb", "vc2", 4, 8192, 160, 4096, 40.0, None),
    ("vc2-6c-16gb", "vc2", 6, 16384, 320, 5120, 80.0, None),
    ("vhf-1c-1gb", "vhf", 1, 1024, 32, 1024, 6.0, None),
    ("vhf-2c-4gb", "vhf", 2, 4096, 128, 3072, 24.0, None),
    ("vhp-1c-1gb-amd", "vhp", 1, 1024, 25, 2048, 6.0,
     [r for r in ALL_REGION_IDS if r not in ("sgp", "syd")]),
    ("vhp-2c-4gb-intel", "vhp", 2, 4096, 100, 5120, 24.0, ["ewr", "ord", "ams", "fra"]),
    ("vdc-4c-16gb", "vdc", 4, 16384, 384, 10240, 120.0, ["ewr", "ams"]),
]

# id, name, arch, family. Ids as in a real GET /os dump (2025-08); not in id order
# anyone would guess, so clients must look Ubuntu 24.04 up by name.
OS_LIST = [
    (159, "Custom", "x64", "iso"),
    (164, "Snapshot", "x64", "snapshot"),
    (180, "Backup", "x64", "backup"),
    (186, "Application", "x64", "application"),
    (447, "FreeBSD 13 x64", "x64", "freebsd"),
    (477, "Debian 11 x64 (bullseye)", "x64", "debian"),
    (1743, "Ubuntu 22.04 LTS x64", "x64", "ubuntu"),
    (1868, "Rocky Linux 9 x64", "x64", "rockylinux"),
    (2076, "AlmaLinux 9 x64", "x64", "almalinux"),
    (2136, "Debian 12 x64 (bookworm)", "x64", "debian"),
    (2284, "Ubuntu 24.04 LTS x64", "x64", "ubuntu"),
    (2467, "Windows Standard 2022 x64", "x64", "windows"),
    (2571, "Ubuntu 25.04 x64", "x64", "ubuntu"),
]
NOT_INSTALLABLE_OS = {159, 164, 180, 186}  # need iso_id / snapshot_id / backup / app_id


def region_obj(rid: str) -> dict:
    for r, city, country, continent in REGIONS:
        if r == rid:
            return {"id": r, "city": city, "country": country, "continent": continent,
                    "options": list(REGION_OPTIONS), "connectivity": []}
    raise KeyError(rid)


def plan_obj(pid: str) -> dict | None:
    for p, typ, cpu, ram, disk, bw, month, regions in PLANS:
        if p == pid:
            return {"id": p, "vcpu_count": cpu, "ram": ram, "disk": disk, "disk_count": 1,
                    "bandwidth": bw, "monthly_cost": month,
                    "hourly_cost": round(month / 730.0, 3), "type": typ,
                    "locations": list(regions or ALL_REGION_IDS)}
    return None


def all_plans(typ: str | None) -> list[dict]:
    out = [plan_obj(p[0]) for p in PLANS]
    if typ and typ != "all":
        out = [p for p in out if p["type"] == typ]
    return out


def os_obj(oid: Any) -> dict | None:
    for i, name, arch, family in OS_LIST:
        if i == oid:
            return {"id": i, "name": name, "arch": arch, "family": family}
    return None


def parse_pool_entry(entry: str) -> dict:
    """'192.0.2.10', '10.200.101.2/30' or '10.200.101.2/24@10.200.101.1'."""
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
    return {"ip": str(iface.ip), "netmask": str(iface.netmask), "gateway": gw}


def parse_public_key(pub: str) -> None:
    """Raises ApiError 400 unless `pub` looks like an OpenSSH public key line."""
    parts = pub.strip().split()
    err = bad_request("Invalid SSH key. Keys should be in authorized_keys format: "
                      "'type base64-blob [comment]'.")
    if len(parts) < 2:
        raise err
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise err
    n = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else 0
    if blob[4:4 + n].decode("ascii", "replace") != parts[0]:
        raise err


# --------------------------------------------------------------------------- state
class FakeState:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.boot_delay = float(cfg.boot_delay)
        self.lock_delay = float(cfg.lock_delay)
        self.install_delay = float(cfg.install_delay)
        self.max_rule_count = int(cfg.max_rule_count)
        self.reset()

    def reset(self, pool: list[str] | None = None) -> None:
        self.instances: dict[str, dict] = {}
        self.keys: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.in_use: dict[str, str] = {}  # ipv4 -> instance id
        self.pool: list[dict] = []
        self.set_pool(self.cfg.address_pool if pool is None else pool, replace=True)
        self._seq = itertools.count(1)
        self._v6_seq = itertools.count(1)

    def next_seq(self) -> int:
        return next(self._seq)

    # ------------------------------------------------------------------ pool
    def set_pool(self, entries: list[str], replace: bool) -> None:
        parsed = [parse_pool_entry(e) for e in entries if e.strip()]
        if replace:
            self.pool = []
        for p in parsed:
            if p["ip"] in self.in_use or any(x["ip"] == p["ip"] for x in self.pool):
                continue  # held by an instance: it comes back when that is deleted
            self.pool.append(p)

    def pool_view(self) -> dict:
        return {"available": [p["ip"] for p in self.pool],
                "available_detail": copy.deepcopy(self.pool), "in_use": dict(self.in_use)}

    # ------------------------------------------------------------------ ssh keys
    def key_view(self, k: dict) -> dict:
        return {"id": k["id"], "date_created": vtime(k["created"]), "name": k["name"],
                "ssh_key": k["ssh_key"]}

    def create_key(self, body: dict) -> dict:
        name, pub = body["name"], body["ssh_key"]
        if not name.strip():
            raise bad_request("Invalid SSH key name.")
        parse_public_key(pub)
        k = {"id": str(uuid.uuid4()), "created": time.time(), "name": name,
             "ssh_key": pub.strip(), "seq": self.next_seq()}
        self.keys[k["id"]] = k
        return k

    def get_key(self, kid: str) -> dict:
        k = self.keys.get(kid)
        if k is None:
            raise ApiError(404, "Invalid ssh key.")
        return k

    def update_key(self, kid: str, body: dict) -> None:
        k = self.get_key(kid)
        if "ssh_key" in body:
            parse_public_key(body["ssh_key"])
            k["ssh_key"] = body["ssh_key"].strip()
        if body.get("name"):
            k["name"] = body["name"]

    # ------------------------------------------------------------------ firewall groups
    def group_view(self, g: dict) -> dict:
        return {"id": g["id"], "description": g["description"],
                "date_created": vtime(g["created"]), "date_modified": vtime(g["modified"]),
                "instance_count": sum(1 for i in self.instances.values()
                                      if i["firewall_group_id"] == g["id"]),
                "rule_count": len(g["rules"]), "max_rule_count": g["max_rule_count"]}

    def create_group(self, body: dict) -> dict:
        now = time.time()
        g = {"id": str(uuid.uuid4()), "description": body.get("description", ""),
             "created": now, "modified": now, "rules": {}, "max_rule_count":
             self.max_rule_count, "seq": self.next_seq(), "_rule_ids": itertools.count(1)}
        self.groups[g["id"]] = g
        return g

    def get_group(self, gid: str) -> dict:
        g = self.groups.get(gid)
        if g is None:
            raise ApiError(404, "Firewall group not found.")
        return g

    def update_group(self, gid: str, body: dict) -> None:
        g = self.get_group(gid)
        g["description"] = body["description"]
        g["modified"] = time.time()

    def delete_group(self, gid: str) -> None:
        self.get_group(gid)
        # Undocumented what Vultr does with linked instances; the fake unlinks them.
        for inst in self.instances.values():
            if inst["firewall_group_id"] == gid:
                inst["firewall_group_id"] = ""
        del self.groups[gid]

    @staticmethod
    def rule_view(r: dict) -> dict:
        return dict(r)

    def create_rule(self, gid: str, body: dict) -> dict:
        g = self.get_group(gid)
        if len(g["rules"]) >= g["max_rule_count"]:
            raise bad_request(f"Firewall group {gid} has reached its maximum of "
                              f"{g['max_rule_count']} rules (max_rule_count).")
        proto = body["protocol"]
        r = {"ip_type": body["ip_type"], "type": body["ip_type"], "action": "accept",
             "protocol": proto,
             "port": body.get("port", "") if proto in ("tcp", "udp") else "",
             "subnet": body["subnet"], "subnet_size": body["subnet_size"],
             "source": body.get("source", ""), "notes": body.get("notes", "")}
        if r["source"] == "cloudflare":
            r["subnet"], r["subnet_size"] = "", 0
        key = lambda x: (x["ip_type"], x["protocol"], x["port"], x["subnet"],  # noqa: E731
                         x["subnet_size"], x["source"])
        if any(key(x) == key(r) for x in g["rules"].values()):
            raise bad_request("Unable to create firewall rule: this rule already exists "
                              "in the group.")
        rid = next(g["_rule_ids"])
        r = {"id": rid, **r}
        g["rules"][rid] = r
        g["modified"] = time.time()
        return r

    def get_rule(self, gid: str, rid: str) -> dict:
        g = self.get_group(gid)
        try:
            return g["rules"][int(rid)]
        except (ValueError, KeyError):
            raise ApiError(404, "Firewall rule ID not found.")

    def delete_rule(self, gid: str, rid: str) -> None:
        r = self.get_rule(gid, rid)
        g = self.groups[gid]
        del g["rules"][r["id"]]
        g["modified"] = time.time()

    # ------------------------------------------------------------------ instances
    def phase(self, inst: dict, now: float | None = None) -> dict:
        """status / server_status / locked, from the clock."""
        t = (time.time() if now is None else now) - inst["created"]
        b, lock, inst_d = inst["_boot_delay"], inst["_lock_delay"], inst["_install_delay"]
        pending = t < b
        locked = (b / 2 <= t < b) or t < lock
        if locked:
            server = "locked"
        elif pending:
            server = "none"
        elif t < b + inst_d:
            server = "installingbooting"
        else:
            server = "ok"
        return {"status": "pending" if pending else "active", "server_status": server,
                "locked": locked, "pending": pending}

    def instance_view(self, inst: dict, with_password: bool = False,
                      pending_charges: bool = False, at_create: bool = False) -> dict:
        ph = self.phase(inst)
        if at_create:  # the create answer always shows the fresh state, even with delay 0
            ph = {"status": "pending", "pending": True, "locked": ph["locked"],
                  "server_status": "locked" if ph["locked"] else "none"}
        v4, v6 = inst["_v4"], inst["_v6"]
        assigned = not ph["pending"]
        plan, os_ = inst["plan"], inst["os"]
        features = []
        if inst["backups"] == "enabled":
            features.append("auto_backups")
        if inst["enable_ipv6"]:
            features.append("ipv6")
        if inst["ddos_protection"]:
            features.append("ddos_protection")
        view = {
            "id": inst["id"], "os": os_["name"], "ram": plan["ram"],
            "disk": plan["disk"] if assigned else 0,
            "main_ip": v4["ip"] if (assigned and v4) else "0.0.0.0",
            "vcpu_count": plan["vcpu_count"], "region": inst["region"],
            "plan": plan["id"], "date_created": vtime(inst["created"]),
            "status": ph["status"], "allowed_bandwidth": plan["bandwidth"],
            "netmask_v4": v4["netmask"] if (assigned and v4) else "",
            "gateway_v4": v4["gateway"] if (assigned and v4) else "0.0.0.0",
            "power_status": "running", "server_status": ph["server_status"],
            "v6_network": v6["network"] if (assigned and v6) else "",
            "v6_main_ip": v6["main_ip"] if (assigned and v6) else "",
            "v6_network_size": v6["size"] if (assigned and v6) else 0,
            "label": inst["label"], "internal_ip": "", "vpc_only": False, "vpcs": [],
            "kvm": ("https://my.vultr.com/subs/vps/novnc/api.php?data=fake"
                    + inst["id"].replace("-", "")[:16]) if assigned else "",
            "hostname": inst["hostname"], "os_id": os_["id"], "app_id": 0,
            "image_id": "", "snapshot_id": "",
            "firewall_group_id": inst["firewall_group_id"], "features": features,
            "tags": list(inst["tags"]), "user_scheme": inst["user_scheme"],
        }
        if with_password:
            view["default_password"] = inst["default_password"]
        if pending_charges:
            view["pending_charges"] = round(
                (time.time() - inst["created"]) / 3600 * plan["hourly_cost"], 2)
        return view

    def check_create(self, b: dict) -> dict:
        """Semantic checks of POST /instances (after the schema and prose checks);
        returns the resolved catalog objects. Raises ApiError."""
        if b["region"] not in ALL_REGION_IDS:
            raise bad_request(f"Invalid region: {b['region']!r}.")
        plan = plan_obj(b["plan"])
        if plan is None:
            raise bad_request(f"Invalid plan: {b['plan']!r}.")
        if b["region"] not in plan["locations"]:
            raise bad_request(f"Plan {b['plan']} is not available in region {b['region']}.")
        for k in ("iso_id", "snapshot_id", "app_id", "image_id"):
            if b.get(k):
                raise ApiError(501, f"fake: deploying from {k} is not implemented; "
                                    "use os_id")
        os_ = os_obj(b["os_id"])
        if os_ is None or os_["id"] in NOT_INSTALLABLE_OS:
            raise bad_request(f"Invalid operating system: os_id {b['os_id']}.")
        keys = []
        for kid in b.get("sshkey_id") or []:
            if kid not in self.keys:
                raise bad_request(f"Invalid SSH key ID: {kid}.")
            keys.append(kid)
        fw = b.get("firewall_group_id") or ""
        if fw and fw not in self.groups:
            raise bad_request(f"Invalid firewall group ID: {fw}.")
        disable_v4 = bool(b.get("disable_public_ipv4")) and bool(b.get("enable_ipv6"))
        if not self.cfg.boot_vms and not disable_v4 and not self.pool:
            raise bad_request("fake address pool exhausted: no public IPv4 address left "
                              "(add some with --address-pool or POST /_fake/address-pool)")
        ud = b.get("user_data") or ""
        return {"plan": plan, "os": os_, "keys": keys, "firewall_group_id": fw,
                "disable_v4": disable_v4,
                "user_data": base64.b64decode(ud) if ud else None}

    def create_instance(self, b: dict, chk: dict, iid: str | None = None,
                        vm_ip: str | None = None) -> dict:
        now = time.time()
        iid = iid or str(uuid.uuid4())
        v4 = None
        if vm_ip is not None:
            v4 = parse_pool_entry(vm_ip if "/" in vm_ip else vm_ip + "/24")
        elif not chk["disable_v4"]:
            v4 = self.pool.pop(0)
        if v4:
            self.in_use[v4["ip"]] = iid
        v6 = None
        if b.get("enable_ipv6"):
            n = next(self._v6_seq)
            v6 = {"network": f"2001:db8:{n:x}::", "main_ip": f"2001:db8:{n:x}::2",
                  "size": 64}
        tags = list(b.get("tags") or ([b["tag"]] if b.get("tag") else []))
        label = b.get("label", "")
        inst = {
            "id": iid, "seq": self.next_seq(), "created": now, "region": b["region"],
            "plan": chk["plan"], "os": chk["os"], "label": label,
            "hostname": b.get("hostname") or "vultr.guest", "tags": tags,
            "firewall_group_id": chk["firewall_group_id"],
            "enable_ipv6": bool(b.get("enable_ipv6")), "backups": b.get("backups", "disabled"),
            "ddos_protection": bool(b.get("ddos_protection")),
            "user_scheme": b.get("user_scheme", "root"),
            "default_password": secrets.token_urlsafe(12),
            "sshkey_id": chk["keys"], "user_data": b.get("user_data", ""),
            "_v4": v4, "_v6": v6, "_vm": vm_ip is not None,
            "_boot_delay": self.boot_delay, "_lock_delay": self.lock_delay,
            "_install_delay": self.install_delay, "_request": copy.deepcopy(b),
        }
        self.instances[iid] = inst
        return inst

    def get_instance(self, iid: str) -> dict:
        inst = self.instances.get(iid)
        if inst is None:
            raise ApiError(404, "instance not found")
        return inst

    def list_instances(self, q: dict) -> list[dict]:
        out = []
        for inst in self.instances.values():
            if "tag" in q and q["tag"] not in inst["tags"]:
                continue
            if "label" in q and inst["label"] != q["label"]:
                continue
            if "hostname" in q and inst["hostname"] != q["hostname"]:
                continue
            if "region" in q and inst["region"] != q["region"]:
                continue
            if "firewall_group_id" in q and inst["firewall_group_id"] != q["firewall_group_id"]:
                continue
            if "main_ip" in q and self.instance_view(inst)["main_ip"] != q["main_ip"]:
                continue
            out.append(inst)
        return out

    def update_instance(self, iid: str, b: dict) -> dict:
        inst = self.get_instance(iid)
        for k in ("os_id", "app_id", "image_id", "attach_vpc", "detach_vpc", "attach_vpc2",
                  "detach_vpc2", "attach_private_network", "detach_private_network",
                  "enable_vpc", "enable_vpc2", "enable_private_network"):
            if k in b:
                raise ApiError(501, f"fake: PATCH /instances with {k} is not implemented")
        if "firewall_group_id" in b:
            fw = b["firewall_group_id"]
            if fw and fw not in self.groups:
                raise bad_request(f"Invalid firewall group ID: {fw}.")
        if "plan" in b:
            plan = plan_obj(b["plan"])
            if plan is None or inst["region"] not in plan["locations"]:
                raise bad_request(f"Invalid plan: {b['plan']!r}.")
            inst["plan"] = plan
        if "firewall_group_id" in b:
            inst["firewall_group_id"] = b["firewall_group_id"]
        if "tags" in b:
            inst["tags"] = list(b["tags"])
        elif "tag" in b:
            inst["tags"] = [b["tag"]] if b["tag"] else []
        for k in ("label", "user_data", "backups", "user_scheme"):
            if k in b:
                inst[k] = b[k]
        if "ddos_protection" in b:
            inst["ddos_protection"] = bool(b["ddos_protection"])
        if b.get("enable_ipv6") and not inst["enable_ipv6"]:
            inst["enable_ipv6"] = True
            n = next(self._v6_seq)
            inst["_v6"] = {"network": f"2001:db8:{n:x}::", "main_ip": f"2001:db8:{n:x}::2",
                           "size": 64}
        return inst

    def delete_instance(self, iid: str) -> dict:
        inst = self.get_instance(iid)
        ph = self.phase(inst)
        if ph["locked"]:
            raise ApiError(500, "Unable to destroy server: Unable to remove VM: Server is "
                                "currently locked")
        if ph["pending"]:
            raise ApiError(500, "Unable to destroy server: This subscription is not "
                                "currently active, you cannot destroy it.")
        del self.instances[iid]
        if inst["_v4"]:
            self.in_use.pop(inst["_v4"]["ip"], None)
            if not inst["_vm"]:
                self.pool.append(inst["_v4"])
        return inst

    # ------------------------------------------------------------------ dump
    def dump(self) -> dict:
        insts = []
        for inst in sorted(self.instances.values(), key=lambda i: i["seq"]):
            v = self.instance_view(inst, with_password=True)
            v["_fake"] = {
                "phase": self.phase(inst), "sshkey_id": inst["sshkey_id"],
                "user_data": inst["user_data"], "reserved_ipv4": inst["_v4"],
                "reserved_ipv6": inst["_v6"], "fresh_vm": inst["_vm"],
                "boot_delay": inst["_boot_delay"], "lock_delay": inst["_lock_delay"],
                "install_delay": inst["_install_delay"], "create_request": inst["_request"]}
            insts.append(v)
        groups = []
        for g in sorted(self.groups.values(), key=lambda g: g["seq"]):
            v = self.group_view(g)
            v["rules"] = [dict(r) for r in g["rules"].values()]
            groups.append(v)
        return {
            "instances": insts, "firewall_groups": groups,
            "ssh_keys": [self.key_view(k) for k in sorted(self.keys.values(),
                                                          key=lambda k: k["seq"])],
            "address_pool": self.pool_view(),
            "config": {"boot_delay": self.boot_delay, "lock_delay": self.lock_delay,
                       "install_delay": self.install_delay,
                       "max_rule_count": self.max_rule_count,
                       "boot_vms": bool(self.cfg.boot_vms)},
        }
