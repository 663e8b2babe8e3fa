"""In-memory state of the fake DigitalOcean account (droplets, keys, firewalls, tags...).

All methods are called with `FakeState.lock` held by the HTTP layer.  Time-based
transitions (droplet new -> active, firewall waiting -> succeeded) are applied lazily
by `tick()` at the start of every request, so a request always sees a consistent view.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import itertools
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, err_id: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.err_id = err_id
        self.message = message
        self.headers = headers or {}


def not_found() -> ApiError:
    return ApiError(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(msg: str) -> ApiError:
    return ApiError(422, "unprocessable_entity", msg)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- catalog
_ALL_SIZES = [
    # slug, memory MB, vcpus, disk GB, transfer TB, monthly USD, description
    ("s-1vcpu-1gb", 1024, 1, 25, 1.0, 6.0, "Basic"),
    ("s-1vcpu-2gb", 2048, 1, 50, 2.0, 12.0, "Basic"),
    ("s-2vcpu-2gb", 2048, 2, 60, 3.0, 18.0, "Basic"),
    ("s-2vcpu-4gb", 4096, 2, 80, 4.0, 24.0, "Basic"),
    ("s-4vcpu-8gb", 8192, 4, 160, 5.0, 48.0, "Basic"),
    ("c-2", 4096, 2, 25, 4.0, 42.0, "CPU-Optimized"),
    ("c-4", 8192, 4, 50, 5.0, 84.0, "CPU-Optimized"),
]
_REGIONS = [
    ("nyc3", "New York 3"),
    ("ams3", "Amsterdam 3"),
    ("fra1", "Frankfurt 1"),
    ("lon1", "London 1"),
    ("sfo3", "San Francisco 3"),
    ("sgp1", "Singapore 1"),
    ("tor1", "Toronto 1"),
]
REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage",
                   "image_transfer"]
_IMAGES = [
    # id, slug, name, distribution
    (169000001, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu"),
    (169000002, "ubuntu-22-04-x64", "22.04 (LTS) x64", "Ubuntu"),
    (169000003, "debian-12-x64", "12 x64", "Debian"),
]
CATALOG_CREATED = 1735689600.0  # 2025-01-01T00:00:00Z


def size_obj(slug: str) -> dict | None:
    for s, mem, cpu, disk, tr, month, desc in _ALL_SIZES:
        if s == slug:
            return {
                "slug": s, "memory": mem, "vcpus": cpu, "disk": disk,
                "transfer": float(tr), "price_monthly": float(month),
                "price_hourly": round(month / 672.0, 5),
                "regions": [r for r, _ in _REGIONS], "available": True,
                "description": desc,
                "disk_info": [{"type": "local", "size": {"amount": disk, "unit": "gib"}}],
            }
    return None


def all_sizes() -> list[dict]:
    return [size_obj(s[0]) for s in _ALL_SIZES]


def region_obj(slug: str) -> dict | None:
    for s, name in _REGIONS:
        if s == slug:
            return {"name": name, "slug": s, "features": list(REGION_FEATURES),
                    "available": True, "sizes": [x[0] for x in _ALL_SIZES]}
    return None


def all_regions() -> list[dict]:
    return [region_obj(s) for s, _ in _REGIONS]


def image_obj(key: Any) -> dict | None:
    for iid, slug, name, dist in _IMAGES:
        if key == iid or key == slug:
            return {
                "id": iid, "name": name, "distribution": dist, "slug": slug,
                "public": True, "regions": [r for r, _ in _REGIONS],
                "created_at": iso(CATALOG_CREATED), "type": "base",
                "min_disk_size": 15, "size_gigabytes": 2.5, "description": "",
                "tags": [], "status": "available", "error_message": "",
            }
    return None


def all_images() -> list[dict]:
    return [image_obj(iid) for iid, _, _, _ in _IMAGES]


# --------------------------------------------------------------------------- helpers
TAG_RE = re.compile(r"^[a-zA-Z0-9_\-:]+$")
PORTS_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


def ssh_fingerprint(public_key: str) -> str:
    parts = public_key.strip().split()
    if len(parts) < 2:
        raise unprocessable("Key invalid, key should be of the form 'type key [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, base64.binascii.Error):
        raise unprocessable("Key invalid, key should be of the form 'type key [comment]'")
    # the blob starts with a length-prefixed copy of the key type
    if len(blob) < 4:
        raise unprocessable("Key invalid, key should be of the form 'type key [comment]'")
    n = int.from_bytes(blob[:4], "big")
    if blob[4:4 + n].decode("ascii", "replace") != parts[0]:
        raise unprocessable("Key invalid, type does not match the key data")
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


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
    return {"ip_address": str(iface.ip), "netmask": str(iface.netmask), "gateway": gw}


class FakeState:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.boot_delay = float(cfg.boot_delay)
        self.firewall_delay = float(cfg.firewall_delay)
        # --boot-vms: a tests/fakes/freshvm.FreshVms that boots a fresh VM per droplet (set by server.py)
        self.vms = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self, pool: list[str] | None = None) -> None:
        if self.vms is not None:
            self.vms.destroy_all()
        self.droplets: dict[int, dict] = {}
        self.actions: dict[int, dict] = {}
        self.keys: dict[int, dict] = {}
        self.firewalls: dict[str, dict] = {}
        self.tags: dict[str, float] = {}  # name -> created
        self.in_use: dict[str, int] = {}  # ipv4 -> droplet id
        self.pool: list[dict] = []
        self.set_pool(self.cfg.address_pool if pool is None else pool, replace=True)
        self._droplet_ids = itertools.count(500000001)
        self._action_ids = itertools.count(2000000001)
        self._key_ids = itertools.count(41000001)
        self._v6_seq = itertools.count(1)

    def set_pool(self, entries: list[str], replace: bool) -> None:
        parsed = [parse_pool_entry(e) for e in entries if e.strip()]
        if replace:
            self.pool = []
        for p in parsed:
            if p["ip_address"] in self.in_use:
                continue  # still held by a droplet: comes back when it is deleted
            if any(x["ip_address"] == p["ip_address"] for x in self.pool):
                continue
            self.pool.append(p)

    def pool_view(self) -> dict:
        return {"available": [p["ip_address"] for p in self.pool],
                "available_detail": copy.deepcopy(self.pool),
                "in_use": dict(self.in_use)}

    # ------------------------------------------------------------------ time
    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for d in self.droplets.values():
            if d["status"] == "new" and now >= d["_boot_at"]:
                d["status"] = "active"
                if d["_v4"]:
                    d["networks"]["v4"] = [dict(d["_v4"], type="public")]
                if d["_v6"]:
                    d["networks"]["v6"] = [dict(d["_v6"], type="public")]
                a = self.actions.get(d["_create_action"])
                if a:
                    a["status"] = "completed"
                    a["completed_at"] = iso(d["_boot_at"])
        for fw in self.firewalls.values():
            if fw["status"] == "waiting" and now >= fw["_settle_at"]:
                fw["status"] = "succeeded"
                fw["_pending"] = {}

    # ------------------------------------------------------------------ account
    def account(self) -> dict:
        return {
            "droplet_limit": self.cfg.droplet_limit, "floating_ip_limit": 3,
            "volume_limit": 10, "email": "sfuctl-fake@example.com",
            "name": "sfuctl fake", "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True, "status": "active", "status_message": "",
            "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece",
                     "name": "sfuctl test team"},
        }

    # ------------------------------------------------------------------ ssh keys
    def key_view(self, k: dict) -> dict:
        return {"id": k["id"], "fingerprint": k["fingerprint"],
                "public_key": k["public_key"], "name": k["name"]}

    def create_key(self, body: dict) -> dict:
        name = body.get("name")
        pub = body.get("public_key")
        if not isinstance(name, str) or not name.strip():
            raise unprocessable("Name can't be blank")
        if not isinstance(pub, str) or not pub.strip():
            raise unprocessable("Public key can't be blank")
        fp = ssh_fingerprint(pub)
        if any(k["fingerprint"] == fp for k in self.keys.values()):
            raise unprocessable("SSH Key is already in use on your account")
        kid = next(self._key_ids)
        k = {"id": kid, "fingerprint": fp, "public_key": pub.strip(), "name": name}
        self.keys[kid] = k
        return k

    def find_key(self, ident: Any) -> dict:
        for k in self.keys.values():
            if k["id"] == ident or k["fingerprint"] == str(ident):
                return k
        raise not_found()

    # ------------------------------------------------------------------ tags
    def ensure_tag(self, name: str) -> None:
        if not isinstance(name, str) or not TAG_RE.match(name) or len(name) > 255:
            raise unprocessable(
                f"tag name {name!r} is invalid: only letters, numbers, ':', '-' and '_' "
                "are allowed (max 255 characters)")
        self.tags.setdefault(name, time.time())

    def require_tags(self, names: list | None, what: str) -> None:
        for t in names or []:
            if t not in self.tags:
                raise unprocessable(f"{what}: tag {t!r} does not exist")

    def tag_view(self, name: str, base: str) -> dict:
        droplets = [d for d in self.droplets.values() if name in d["tags"]]
        last = f"{base}/v2/droplets/{droplets[-1]['id']}" if droplets else ""
        meta = {"count": len(droplets), "last_tagged_uri": last}
        empty = {"count": 0, "last_tagged_uri": ""}
        return {"name": name, "resources": {
            **meta, "droplets": dict(meta), "images": dict(empty),
            "volumes": dict(empty), "volume_snapshots": dict(empty),
            "databases": dict(empty)}}

    def delete_tag(self, name: str) -> None:
        if name not in self.tags:
            raise not_found()
        del self.tags[name]
        for d in self.droplets.values():
            if name in d["tags"]:
                d["tags"].remove(name)
        for fw in self.firewalls.values():
            if name in fw["tags"]:
                before = self._covered(fw)
                fw["tags"].remove(name)
                self._fw_changed(fw, before)

    # ------------------------------------------------------------------ droplets
    def _region_for(self, wanted: Any) -> dict:
        if wanted is None:
            return region_obj(_REGIONS[0][0])
        r = region_obj(wanted)
        if r:
            return r
        for slug, _ in _REGIONS:  # a prefix like "nyc" picks any datacenter there
            if re.fullmatch(r"[a-z]+", str(wanted)) and slug.startswith(wanted):
                return region_obj(slug)
        raise unprocessable("You specified an invalid region for Droplet creation.")

    def create_droplets(self, body: dict, base: str) -> tuple[list[dict], list[dict]]:
        names = body["names"] if "names" in body else [body.get("name")]
        if not names or any(not isinstance(n, str) or not n for n in names):
            raise unprocessable("Name is required")
        if len(names) > 10:
            raise unprocessable("You can create at most 10 Droplets at a time.")
        size = size_obj(body.get("size"))
        if size is None:
            raise unprocessable("You specified an invalid size for Droplet creation.")
        region = self._region_for(body.get("region"))
        if size["slug"] not in region["sizes"]:
            raise unprocessable("Size is not available in this region.")
        image = image_obj(body.get("image"))
        if image is None:
            raise unprocessable("You specified an invalid image for Droplet creation.")
        keys = []
        for ident in body.get("ssh_keys") or []:
            try:
                keys.append(self.find_key(ident)["id"])
            except ApiError:
                raise unprocessable(
                    f"You specified an invalid SSH key ({ident!r}) for Droplet creation.")
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode()) > 64 * 1024:
            raise unprocessable("user_data must not exceed 64 KiB.")
        tags = list(dict.fromkeys(body.get("tags") or []))
        for t in tags:
            if not isinstance(t, str) or not TAG_RE.match(t):
                raise unprocessable(f"tag name {t!r} is invalid")
        public = body.get("public_networking", True)
        ipv6 = bool(body.get("ipv6", False))
        if not public and ipv6:
            raise unprocessable("ipv6 must be false when public_networking is false")
        if len(self.droplets) + len(names) > self.cfg.droplet_limit:
            raise unprocessable(
                "creating this/these droplet(s) will exceed your droplet limit "
                f"({self.cfg.droplet_limit})")
        boot_vms = public and self.vms is not None
        if public and not boot_vms and len(self.pool) < len(names):
            raise unprocessable(
                f"fake address pool exhausted: {len(names)} public IPv4 address(es) needed, "
                f"{len(self.pool)} left in the pool (add some with --address-pool or "
                "POST /_fake/address-pool)")
        for t in tags:
            self.ensure_tag(t)
        ids = [next(self._droplet_ids) for _ in names]
        vm_v4 = self._boot_vms(ids, names, body, keys) if boot_vms else {}
        now = time.time()
        created, actions = [], []
        for did, name in zip(ids, names):
            v4 = vm_v4[did] if boot_vms else (self.pool.pop(0) if public else None)
            if v4:
                self.in_use[v4["ip_address"]] = did
            v6 = None
            if ipv6:
                n = next(self._v6_seq)
                v6 = {"ip_address": f"2001:db8:{n:x}::2", "netmask": 64,
                      "gateway": f"2001:db8:{n:x}::1"}
            aid = next(self._action_ids)
            features = ["droplet_agent"] if body.get("with_droplet_agent", True) else []
            features += ["private_networking"]
            if ipv6:
                features.append("ipv6")
            if body.get("monitoring"):
                features.append("monitoring")
            if body.get("backups"):
                features.append("backups")
            d = {
                "id": did, "name": name, "memory": size["memory"], "vcpus": size["vcpus"],
                "disk": size["disk"], "disk_info": copy.deepcopy(size["disk_info"]),
                "locked": False, "status": "new", "kernel": None,
                "created_at": iso(now), "features": features, "backup_ids": [],
                "next_backup_window": None, "snapshot_ids": [], "image": image,
                "volume_ids": [], "size": size, "size_slug": size["slug"],
                "networks": {"v4": [], "v6": []}, "region": region, "tags": list(tags),
                "vpc_uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                           f"default-vpc.{region['slug']}")),
                # private (not in API responses, visible in /_fake/state)
                "_boot_at": now + self.boot_delay, "_v4": v4, "_v6": v6,
                "_create_action": aid, "_user_data": user_data, "_ssh_keys": keys,
                "_request": copy.deepcopy(body), "_vm": f"droplet-{did}" if boot_vms else None,
            }
            self.droplets[did] = d
            a = {"id": aid, "status": "in-progress", "type": "create",
                 "started_at": iso(now), "completed_at": None, "resource_id": did,
                 "resource_type": "droplet", "region": region,
                 "region_slug": region["slug"]}
            self.actions[aid] = a
            created.append(d)
            actions.append({"id": aid, "rel": "create", "href": f"{base}/v2/actions/{aid}"})
            # firewalls attached by tag start covering the new droplet
            for fw in self.firewalls.values():
                if set(fw["tags"]) & set(tags):
                    fw["_pending"][did] = False
                    fw["status"] = "waiting"
                    fw["_settle_at"] = max(fw["_settle_at"], now + self.firewall_delay,
                                           d["_boot_at"])
        return created, actions

    def _boot_vms(self, ids: list[int], names: list[str], body: dict, key_ids: list[int]) -> dict:
        """--boot-vms: one fresh VM per droplet (in parallel), booted with the user_data the client sent and the
        SSH keys it named, logging in as root as DigitalOcean's images do. Returns droplet id -> networks.v4
        entry with the VM's address."""
        from concurrent.futures import ThreadPoolExecutor

        user_data = body.get("user_data")
        pubkeys = [self.keys[k]["public_key"] for k in key_ids if k in self.keys]

        def boot(pair):
            did, name = pair
            return did, self.vms.boot(f"droplet-{did}", user_data.encode() if user_data else None, pubkeys,
                                      "root", hostname=name)
        out, errors = {}, []
        with ThreadPoolExecutor(max_workers=min(4, len(ids))) as ex:
            futs = [ex.submit(boot, p) for p in zip(ids, names)]
            for f in futs:
                try:
                    did, addr = f.result()
                    out[did] = {"ip_address": addr, "netmask": "255.255.252.0", "gateway": "10.200.252.1"}
                except Exception as e:  # noqa: BLE001
                    errors.append(str(e))
        if errors:
            for did in out:
                self.vms.destroy(f"droplet-{did}")
            raise ApiError(500, "server_error", f"fake --boot-vms: could not boot a VM: {errors[0]}")
        return out

    @staticmethod
    def droplet_view(d: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in d.items() if not k.startswith("_")}

    def get_droplet(self, did: int) -> dict:
        d = self.droplets.get(did)
        if d is None:
            raise not_found()
        return d

    def list_droplets(self, tag: str | None, name: str | None) -> list[dict]:
        out = [d for d in self.droplets.values()
               if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)]
        return sorted(out, key=lambda d: d["id"])

    def delete_droplet(self, did: int) -> None:
        d = self.get_droplet(did)
        del self.droplets[did]
        if d.get("_vm"):
            # --boot-vms: the address was the VM's, not the pool's; the VM goes with the droplet
            self.in_use.pop(d["_v4"]["ip_address"], None)
            self.vms.destroy(d["_vm"])
        elif d["_v4"]:
            self.in_use.pop(d["_v4"]["ip_address"], None)
            self.pool.append(d["_v4"])
        for fw in self.firewalls.values():
            if did in fw["droplet_ids"]:
                fw["droplet_ids"].remove(did)
            fw["_pending"].pop(did, None)

    def delete_by_tag(self, tag: str) -> int:
        if tag not in self.tags:
            raise not_found()
        ids = [d["id"] for d in self.droplets.values() if tag in d["tags"]]
        for did in ids:
            self.delete_droplet(did)
        return len(ids)

    # ------------------------------------------------------------------ firewalls
    def _covered(self, fw: dict) -> set[int]:
        ids = set(fw["droplet_ids"])
        tags = set(fw["tags"])
        if tags:
            ids |= {d["id"] for d in self.droplets.values() if tags & set(d["tags"])}
        return ids

    def _fw_changed(self, fw: dict, before: set[int]) -> None:
        now = time.time()
        after = self._covered(fw)
        settle = now + self.firewall_delay
        for did in after - before:
            fw["_pending"][did] = False
            d = self.droplets.get(did)
            if d and d["status"] == "new":
                settle = max(settle, d["_boot_at"])
        for did in before - after:
            fw["_pending"][did] = True
        fw["status"] = "waiting"
        fw["_settle_at"] = settle

    def _check_rules(self, rules: list | None, key: str) -> list[dict]:
        out = []
        for i, r in enumerate(rules or []):
            where = f"{'inbound' if key == 'sources' else 'outbound'}_rules[{i}]"
            proto = r["protocol"]
            ports = r.get("ports")
            if proto == "icmp":
                ports = "0"
            else:
                m = PORTS_RE.match(ports or "")
                if not m:
                    raise unprocessable(
                        f"{where}: invalid ports value {ports!r}: use a port, a range "
                        "'low-high' or \"0\" for all ports")
                lo = int(m.group(1))
                hi = int(m.group(2)) if m.group(2) else lo
                if ports != "0" and not (1 <= lo <= hi <= 65535):
                    raise unprocessable(f"{where}: ports {ports!r} out of range 1-65535")
            target = r.get(key) or {}
            clean = {k: list(v) for k, v in target.items() if v}
            if not clean:
                raise unprocessable(f"{where}: at least one of {key}.addresses, "
                                    "droplet_ids, load_balancer_uids, kubernetes_ids or "
                                    "tags must be given")
            for a in clean.get("addresses", []):
                try:
                    ipaddress.ip_network(a, strict=False)
                except ValueError:
                    raise unprocessable(f"{where}: invalid address {a!r}")
            for did in clean.get("droplet_ids", []):
                if did not in self.droplets:
                    raise unprocessable(f"{where}: droplet {did} does not exist")
            self.require_tags(clean.get("tags"), where)
            out.append({"protocol": proto, "ports": ports, key: target})
        return out

    def _fw_body(self, body: dict) -> dict:
        inbound = self._check_rules(body.get("inbound_rules"), "sources")
        outbound = self._check_rules(body.get("outbound_rules"), "destinations")
        droplet_ids = list(dict.fromkeys(body.get("droplet_ids") or []))
        for did in droplet_ids:
            if did not in self.droplets:
                raise unprocessable(f"droplet_ids: droplet {did} does not exist")
        tags = list(dict.fromkeys(body.get("tags") or []))
        self.require_tags(tags, "tags")
        return {"name": body["name"], "inbound_rules": inbound,
                "outbound_rules": outbound, "droplet_ids": droplet_ids, "tags": tags}

    def _check_name(self, name: str, fw_id: str | None) -> None:
        for other in self.firewalls.values():
            if other["name"] == name and other["id"] != fw_id:
                raise ApiError(409, "conflict", "duplicate name")

    def create_firewall(self, body: dict) -> dict:
        fields = self._fw_body(body)
        self._check_name(fields["name"], None)
        now = time.time()
        fw = {"id": str(uuid.uuid4()), "status": "waiting", "created_at": iso(now),
              **fields, "_pending": {}, "_settle_at": now + self.firewall_delay}
        self._fw_changed(fw, set())
        self.firewalls[fw["id"]] = fw
        return fw

    def fw_view(self, fw: dict) -> dict:
        v = {k: copy.deepcopy(fw[k]) for k in (
            "id", "name", "status", "inbound_rules", "outbound_rules", "created_at",
            "droplet_ids", "tags")}
        v["pending_changes"] = [
            {"droplet_id": did, "removing": rem, "status": "waiting"}
            for did, rem in sorted(fw["_pending"].items())]
        return v

    def get_firewall(self, fid: str) -> dict:
        fw = self.firewalls.get(fid)
        if fw is None:
            raise not_found()
        return fw

    def replace_firewall(self, fid: str, body: dict) -> dict:
        fw = self.get_firewall(fid)
        fields = self._fw_body(body)  # omitted droplet_ids/tags/rules become empty
        self._check_name(fields["name"], fid)
        before = self._covered(fw)
        fw.update(fields)
        self._fw_changed(fw, before)
        return fw

    def delete_firewall(self, fid: str) -> None:
        self.get_firewall(fid)
        del self.firewalls[fid]

    def fw_droplets(self, fid: str, ids: list[int], add: bool) -> None:
        fw = self.get_firewall(fid)
        for did in ids:
            if did not in self.droplets:
                raise unprocessable(f"droplet {did} does not exist")
        before = self._covered(fw)
        for did in ids:
            if add and did not in fw["droplet_ids"]:
                fw["droplet_ids"].append(did)
            elif not add and did in fw["droplet_ids"]:
                fw["droplet_ids"].remove(did)
        self._fw_changed(fw, before)

    def fw_tags(self, fid: str, tags: list[str], add: bool) -> None:
        fw = self.get_firewall(fid)
        self.require_tags(tags, "tags")
        before = self._covered(fw)
        for t in tags:
            if add and t not in fw["tags"]:
                fw["tags"].append(t)
            elif not add and t in fw["tags"]:
                fw["tags"].remove(t)
        self._fw_changed(fw, before)

    def fw_rules(self, fid: str, body: dict, add: bool) -> None:
        fw = self.get_firewall(fid)
        for key, target in (("inbound_rules", "sources"), ("outbound_rules", "destinations")):
            rules = self._check_rules(body.get(key), target)
            for r in rules:
                if add:
                    if r not in fw[key]:
                        fw[key].append(r)
                else:
                    fw[key] = [x for x in fw[key] if not self._same_rule(x, r, target)]
        self._fw_changed(fw, self._covered(fw))

    @staticmethod
    def _same_rule(a: dict, b: dict, target: str) -> bool:
        def norm(r):
            t = {k: sorted(map(str, v)) for k, v in (r.get(target) or {}).items() if v}
            return (r["protocol"], r["ports"], sorted(t.items()))
        return norm(a) == norm(b)

    def droplet_firewalls(self, did: int) -> list[dict]:
        d = self.get_droplet(did)
        return [fw for fw in self.firewalls.values()
                if did in fw["droplet_ids"] or set(fw["tags"]) & set(d["tags"])]

    # ------------------------------------------------------------------ actions
    def get_action(self, aid: int) -> dict:
        a = self.actions.get(aid)
        if a is None:
            raise not_found()
        return a

    # ------------------------------------------------------------------ dump
    def dump(self) -> dict:
        droplets = []
        for d in sorted(self.droplets.values(), key=lambda d: d["id"]):
            v = self.droplet_view(d)
            v["_fake"] = {"boot_at": iso(d["_boot_at"]), "user_data": d["_user_data"],
                          "ssh_key_ids": d["_ssh_keys"], "reserved_ipv4": d["_v4"],
                          "reserved_ipv6": d["_v6"], "create_request": d["_request"],
                          "vm": d.get("_vm")}
            droplets.append(v)
        return {
            "droplets": droplets,
            "firewalls": [self.fw_view(f) for f in self.firewalls.values()],
            "ssh_keys": [self.key_view(k) for k in self.keys.values()],
            "tags": sorted(self.tags),
            "actions": list(self.actions.values()),
            "address_pool": self.pool_view(),
            "config": {"boot_delay": self.boot_delay, "firewall_delay": self.firewall_delay,
                       "droplet_limit": self.cfg.droplet_limit},
        }
