#!/usr/bin/env python3
"""Launch moto's server as a local EC2 (Query API 2016-11-15) fake for sfuctl's tests.

Run it with the test-bed venv (scripts/testbed/fake-deps installs moto==5.2.1 there):

    /opt/sfuctl-testbed/venv/bin/python tests/fakes/aws/launch.py \
        --port 0 --port-file "$T/moto.port" --log-file "$T/moto.log" \
        --address-pool 10.200.101.2,10.200.102.2 [--auth --credentials-file "$T/aws.env"] \
        [--exit-with-parent]

What it adds to plain `moto_server` (see README.md beside this file for the details):
  * always binds 127.0.0.1; `--port 0` picks a free port, written (atomically, once the
    server answers a signed EC2 request) to --port-file;
  * the three validation switches (key pair, AMI, instance type) are on;
  * MOTO_AMIS_PATH = amis.json beside this file (Canonical Ubuntu 24.04/22.04 images);
  * public IPv4 addresses come ONLY from the test's pool (--address-pool, --address-pool-file,
    POST /_sfuctl/pool/add). An exhausted pool makes RunInstances fail with
    InsufficientInstanceCapacity (HTTP 500 like AWS, --pool-exhausted-status to change) and
    rolls back everything the failed call created. Terminated/stopped instances give their
    address back. moto never invents a public address in this mode;
  * RunInstances honours ClientToken (moto 5.2.1 itself ignores it);
  * --auth: SigV4 is checked (moto IAM mode, INITIAL_NO_AUTH_ACTION_COUNT=0); the launcher makes
    an IAM user with an allow-all policy and writes its key to --credentials-file (0600). The
    user survives POST /moto-api/reset (it is re-created with the same key);
  * --exit-with-parent: exits when the process that started it dies;
  * a small control/inspection surface under /_sfuctl/ (health, pool, state, config);
  * --boot-vms: every instance is a fresh VM (scripts/testbed/vm, tests/fakes/freshvm.py) booted with
    the UserData and the key pair's public key, login `ubuntu` with sudo as on Ubuntu AMIs; its address
    is the instance's public IPv4; TerminateInstances, /moto-api/reset and the launcher's exit destroy it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import ipaddress
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_AMIS = os.path.join(HERE, "amis.json")
DEFAULT_REGION = "us-east-1"
IAM_USER = "sfuctl-test"


def log(msg: str) -> None:
    ts = time.strftime("%H:%M:%S")
    print(f"[aws-fake {ts}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def parse_addresses(text: str, source: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for tok in line.replace(",", " ").split():
            try:
                addr = ipaddress.IPv4Address(tok)
            except ValueError as e:
                raise ValueError(f"{source}: not an IPv4 address: {tok!r}") from e
            out.append(str(addr))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--port-file", help="write the port here (atomically) once the server answers")
    p.add_argument("--log-file", help="append stdout/stderr (request log included) here")
    p.add_argument("--address-pool", default="",
                   help="comma-separated IPv4 addresses handed out as public IPs, in this order")
    p.add_argument("--address-pool-file",
                   help="file with more pool addresses (comma/space/line separated, # comments); "
                        "re-read at every allocation, so a test may append to it at run time")
    p.add_argument("--random-public-ips", action="store_true",
                   help="disable the pool: let moto invent 54.214.x.x addresses (NEVER connect to them)")
    p.add_argument("--pool-exhausted-status", type=int, default=500,
                   help="HTTP status of the InsufficientInstanceCapacity error (AWS uses 500, which SDKs retry)")
    p.add_argument("--no-client-token", action="store_true",
                   help="do not emulate RunInstances ClientToken idempotency (plain moto behaviour)")
    p.add_argument("--auth", action="store_true", help="check SigV4 signatures (moto IAM mode)")
    p.add_argument("--credentials-file", help="with --auth: where to write the generated key (mode 0600)")
    p.add_argument("--amis-file", default=DEFAULT_AMIS, help="MOTO_AMIS_PATH (default: amis.json beside this file)")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process dies")
    p.add_argument("--parent-pid", type=int, help="with --exit-with-parent: watch this pid instead of the parent")
    p.add_argument("--startup-timeout", type=float, default=30.0)
    p.add_argument("--boot-vms", action="store_true",
                   help="boot a fresh VM per instance (UserData, the key pair's public key, login ubuntu); its "
                        "address is the public IPv4. Needs root and scripts/testbed/install")
    a = p.parse_args(argv)
    if a.auth and not a.credentials_file:
        p.error("--auth needs --credentials-file")
    if a.credentials_file and not a.auth:
        p.error("--credentials-file only makes sense with --auth")
    try:
        a.pool = parse_addresses(a.address_pool, "--address-pool")
    except ValueError as e:
        p.error(str(e))
    if a.random_public_ips and (a.pool or a.address_pool_file):
        p.error("--random-public-ips conflicts with --address-pool/--address-pool-file")
    if a.random_public_ips and a.boot_vms:
        p.error("--random-public-ips conflicts with --boot-vms (the VMs' addresses are the public IPs)")
    return a


# --------------------------------------------------------------------------------------------
# atomic small files
# --------------------------------------------------------------------------------------------
def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    path = os.path.abspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask-proof
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the public address pool
# --------------------------------------------------------------------------------------------
POOL_LOCK = threading.RLock()  # held around every allocation + assignment and around RunInstances


class PoolExhausted(Exception):
    """Raised by the pool; converted to an EC2 error response by PoolHTTPError."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class AddressPool:
    def __init__(self, addresses: list[str], file: str | None, enabled: bool):
        self.enabled = enabled
        self._static = list(dict.fromkeys(addresses))
        self._added: list[str] = []
        self._removed: set[str] = set()
        self.file = os.path.abspath(file) if file else None

    def _file_addresses(self) -> list[str]:
        if not self.file:
            return []
        try:
            with open(self.file, encoding="utf-8") as f:
                return parse_addresses(f.read(), self.file)
        except FileNotFoundError:
            return []
        except ValueError as e:
            log(f"address pool file ignored: {e}")
            return []

    def addresses(self) -> list[str]:
        with POOL_LOCK:
            seq = self._static + self._file_addresses() + self._added
            return [a for a in dict.fromkeys(seq) if a not in self._removed]

    def add(self, addrs: list[str]) -> None:
        with POOL_LOCK:
            for a in addrs:
                self._removed.discard(a)
                if a not in self._static and a not in self._added:
                    self._added.append(a)

    def remove(self, addrs: list[str]) -> None:
        with POOL_LOCK:
            self._removed.update(addrs)

    def set(self, addrs: list[str]) -> None:
        with POOL_LOCK:
            self._static = list(dict.fromkeys(addrs))
            self._added = []
            self._removed = set()
            self.file = None

    @staticmethod
    def in_use() -> dict[str, str]:
        """Public IPv4 -> holder, computed from moto's live state (all accounts, all regions).

        Deriving it from the state (instead of keeping our own 'allocated' set) means that
        terminate, stop, ENI deletion, EIP release and /moto-api/reset all give addresses back
        without any bookkeeping of ours."""
        from moto.ec2.models import ec2_backends

        used: dict[str, str] = {}
        for _acct, per_region in list(dict.items(ec2_backends)):
            for _region, be in list(dict.items(per_region)):
                for eni in list(getattr(be, "enis", {}).values()):
                    if eni.public_ip:
                        used[eni.public_ip] = eni.instance.id if eni.instance else eni.id
                for eip in list(getattr(be, "addresses", [])):
                    if eip.public_ip:
                        used.setdefault(eip.public_ip, eip.allocation_id or "eip")
        return used

    def allocate(self, kind: str) -> str:
        with POOL_LOCK:
            pool = self.addresses()
            used = self.in_use()
            for a in pool:
                if a not in used:
                    log(f"pool: {a} -> {kind}")
                    return a
            holders = ", ".join(f"{a}={used[a]}" for a in pool if a in used) or "none"
            msg = (f"sfuctl test address pool exhausted: all {len(pool)} public IPv4 address(es) are in use "
                   f"({holders}). Add more with POST /_sfuctl/pool/add or --address-pool-file; "
                   f"moto will not invent an address.")
            log("pool: EXHAUSTED for " + kind + ": " + msg)
            raise PoolExhausted(kind, msg)

    def snapshot(self) -> dict:
        with POOL_LOCK:
            pool = self.addresses()
            used = self.in_use()
            return {
                "enabled": self.enabled,
                "pool": pool,
                "in_use": {a: used[a] for a in pool if a in used},
                "free": [a for a in pool if a not in used],
                "outside_pool": {a: h for a, h in used.items() if a not in pool},
                "file": self.file,
            }


# --------------------------------------------------------------------------------------------
# moto patches (all in-process; installed package files are never touched)
# --------------------------------------------------------------------------------------------
CONFIG = {"client_token_idempotency": True, "pool_exhausted_status": 500}

# --boot-vms: the FreshVms of this launcher, instance id -> VM name, and the addresses that the VMs
# booted by the RunInstances running in this thread hand to moto's public-IP hook, in order.
VMS = None
INSTANCE_VMS: dict[str, str] = {}
VM_ADDRS = threading.local()


def ec2_error_xml(code: str, message: str) -> str:
    from xml.sax.saxutils import escape

    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error></Errors>"
            "<RequestID>request-id</RequestID></Response>")


def make_http_error(code: str, message: str, status: int) -> Exception:
    """A werkzeug HTTPException: moto's BaseResponse.call_action turns it into a response with
    our body and status (ServiceException would get its status from botocore's error model)."""
    from werkzeug.exceptions import HTTPException

    class PoolHTTPError(HTTPException):
        def get_headers(self, environ=None, scope=None):  # noqa: ARG002
            return [("Content-Type", "text/xml")]

    err = PoolHTTPError(description=ec2_error_xml(code, message))
    err.code = status
    return err


def _to_http(e: PoolExhausted) -> Exception:
    if e.kind == "eip":
        return make_http_error("AddressLimitExceeded", e.message, 400)
    return make_http_error("InsufficientInstanceCapacity", e.message, CONFIG["pool_exhausted_status"])


def _fingerprint(image_id, count, user_data, sg_names, kwargs) -> str:
    skip = {"client_token", "region_name", "ami_launch_index"}
    data = {k: v for k, v in kwargs.items() if k not in skip}
    data.update(image_id=image_id, count=count, user_data=str(user_data) if user_data else None,
                security_group_names=list(sg_names or []))
    return json.dumps(data, sort_keys=True, default=str)


def _untrack(cls, keep) -> None:
    """Drop rolled-back objects from moto's model tracking (/moto-api/data.json)."""
    tracked = getattr(cls, "instances_tracked", None)
    if isinstance(tracked, list):
        tracked[:] = [o for o in tracked if keep(o)]


def _rollback(be, before: dict) -> None:
    from moto.ec2.models.elastic_block_store import Volume
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance

    for rid in [r for r in list(be.reservations) if r not in before["reservations"]]:
        res = be.reservations.pop(rid)
        for inst in res.instances:
            try:
                inst.terminate()
            except Exception as ex:  # best effort; the objects are dropped below anyway
                log(f"rollback: terminate {inst.id}: {ex!r}")
    for eni_id in [e for e in list(be.enis) if e not in before["enis"]]:
        be.enis.pop(eni_id, None)
    for vol_id in [v for v in list(be.volumes) if v not in before["volumes"]]:
        be.volumes.pop(vol_id, None)
    for subnet, ips in before["subnet_ips"]:
        for ip in [i for i in list(subnet._subnet_ips) if i not in ips]:
            subnet._subnet_ips.pop(ip, None)
    for rid in [t for t in list(be.tags) if t not in before["tags"]]:
        be.tags.pop(rid, None)
    live_instances = {i.id for r in be.reservations.values() for i in r.instances}
    _untrack(Instance, lambda o: getattr(o, "ec2_backend", None) is not be
             or getattr(o, "id", None) in live_instances or id(o) in before["tracked_instances"])
    _untrack(NetworkInterface, lambda o: getattr(o, "ec2_backend", None) is not be
             or getattr(o, "id", None) in be.enis or id(o) in before["tracked_enis"])
    _untrack(Volume, lambda o: getattr(o, "ec2_backend", None) is not be
             or getattr(o, "id", None) in be.volumes or id(o) in before["tracked_volumes"])


def _boot_vms(be, count: int, user_data, kwargs: dict) -> list[tuple[str, str]]:
    """--boot-vms: boots `count` VMs (in parallel) for one RunInstances before moto makes the instances, with
    the UserData and the key pair's public key; AWS's Ubuntu AMIs log in as `ubuntu`. Returns [(vm, address)]."""
    import base64
    import secrets
    from concurrent.futures import ThreadPoolExecutor

    raw = base64.b64decode(user_data.as_bytes()) if user_data is not None else None
    keys = []
    key_name = kwargs.get("key_name")
    if key_name and key_name in be.key_pairs:
        keys.append(be.key_pairs[key_name].public_key.strip())
    names = [f"ec2-{secrets.token_hex(4)}" for _ in range(count)]
    booted, errors = [], []
    with ThreadPoolExecutor(max_workers=min(4, count)) as ex:
        futs = {ex.submit(VMS.boot, n, raw, keys, "ubuntu"): n for n in names}
        for f, n in futs.items():
            try:
                booted.append((n, f.result()))
            except Exception as e:  # noqa: BLE001
                errors.append(str(e))
    if errors:
        _destroy_vms([n for n, _ in booted])
        raise make_http_error("InternalError", f"fake --boot-vms: could not boot a VM: {errors[0]}", 500)
    return booted


def _destroy_vms(names: list[str]) -> None:
    for n in names:
        try:
            VMS.destroy(n)
            log(f"boot-vms: destroyed VM {n}")
        except Exception as e:  # noqa: BLE001
            log(f"boot-vms: destroying VM {n} failed: {e}")


def install_patches(pool: AddressPool, auth: "AuthState | None") -> None:
    import moto.ec2.utils as ec2_utils
    import moto.ec2.models.amis as amis_mod
    import moto.ec2.models.elastic_ip_addresses as eip_mod
    import moto.ec2.models.elastic_network_interfaces as eni_mod
    from moto.core.base_backend import BackendDict
    from moto.ec2.models.elastic_block_store import Volume
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    from moto.ec2.models.instances import Instance, InstanceBackend

    # (1) moto bug: with MOTO_AMIS_PATH, Ami loading rewrites the shared AMIS list's
    #     creation_date strings into datetimes, so the 2nd EC2 backend (another region, or any
    #     backend after /moto-api/reset) dies with "Invalid timestamp". Let datetimes through.
    orig_parse = amis_mod.parse_timestamp

    def parse_timestamp(value):
        return value if isinstance(value, _dt.datetime) else orig_parse(value)

    amis_mod.parse_timestamp = parse_timestamp

    if pool.enabled:
        # (2) THE hook: every auto-assigned public IPv4 of an instance comes from
        #     NetworkInterface.check_auto_public_ip() -> utils.random_public_ip() (imported by
        #     name into elastic_network_interfaces). Instance.public_ip / public_dns_name /
        #     ipAddress / dnsName and the ENI association all read eni.public_ip, so replacing
        #     the generator keeps every field consistent. nic.stop() (stop/terminate) sets
        #     public_ip=None, which is what returns the address to the pool.
        def pool_public_ip() -> str:
            queued = getattr(VM_ADDRS, "queue", None)
            if queued:  # --boot-vms: the instance's public IPv4 is its VM's address
                return queued.pop(0)
            return pool.allocate("instance")

        ec2_utils.random_public_ip = pool_public_ip
        eni_mod.random_public_ip = pool_public_ip

        orig_check = NetworkInterface.check_auto_public_ip

        def check_auto_public_ip(self) -> None:
            with POOL_LOCK:  # pick + assign atomically (moto_server is threaded)
                orig_check(self)

        NetworkInterface.check_auto_public_ip = check_auto_public_ip

        # (3) Elastic IPs: moto makes up 127.x.y.z; take them from the pool as well.
        def pool_eip() -> str:
            return pool.allocate("eip")

        eip_mod.random_ip = pool_eip
        orig_alloc = eip_mod.ElasticAddressBackend.allocate_address

        def allocate_address(self, *a, **kw):
            with POOL_LOCK:
                try:
                    return orig_alloc(self, *a, **kw)
                except PoolExhausted as e:
                    raise _to_http(e) from None

        eip_mod.ElasticAddressBackend.allocate_address = allocate_address

        orig_start = InstanceBackend.start_instances

        def start_instances(self, *a, **kw):
            with POOL_LOCK:
                try:
                    return orig_start(self, *a, **kw)
                except PoolExhausted as e:
                    raise _to_http(e) from None

        InstanceBackend.start_instances = start_instances

    # (4) RunInstances: ClientToken idempotency + all-or-nothing on pool exhaustion.
    orig_run = InstanceBackend.run_instances

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        token = kwargs.get("client_token")
        if token == "ABCDE":  # moto's placeholder when the request had no ClientToken
            token = None
        with POOL_LOCK:
            tokens = self.__dict__.setdefault("_sfuctl_client_tokens", {})
            fp = _fingerprint(image_id, count, user_data, security_group_names, kwargs)
            if token and CONFIG["client_token_idempotency"] and token in tokens:
                old_fp, rid = tokens[token]
                if old_fp != fp:
                    raise make_http_error(
                        "IdempotentParameterMismatch",
                        f"Arguments on this idempotent request are inconsistent with arguments used "
                        f"in previous request(s) with client token '{token}'.", 400)
                if rid in self.reservations:
                    log(f"RunInstances: ClientToken {token!r} seen before -> {rid} again")
                    return self.reservations[rid]
            before = {
                "reservations": set(self.reservations),
                "enis": set(self.enis),
                "volumes": set(self.volumes),
                "tags": set(self.tags),
                "subnet_ips": [(s, set(s._subnet_ips)) for az in list(self.subnets.values())
                               for s in list(az.values())],
                # identity sets (moto models are not all hashable)
                "tracked_instances": {id(o) for o in Instance.instances_tracked},
                "tracked_enis": {id(o) for o in NetworkInterface.instances_tracked},
                "tracked_volumes": {id(o) for o in Volume.instances_tracked},
            }
            booted = _boot_vms(self, count, user_data, kwargs) if VMS is not None else []
            VM_ADDRS.queue = [addr for _, addr in booted]
            try:
                res = orig_run(self, image_id, count, user_data, security_group_names, **kwargs)
            except PoolExhausted as e:
                _rollback(self, before)
                _destroy_vms([name for name, _ in booted])
                log("RunInstances rolled back: nothing was created")
                raise _to_http(e) from None
            except BaseException:
                _destroy_vms([name for name, _ in booted])
                raise
            finally:
                VM_ADDRS.queue = None
            if booted:
                by_addr = dict((addr, name) for name, addr in booted)
                for inst in res.instances:
                    name = by_addr.pop(inst.public_ip, None)
                    if name:
                        INSTANCE_VMS[inst.id] = name
                        log(f"boot-vms: {inst.id} is VM {name} at {inst.public_ip}")
                _destroy_vms(list(by_addr.values()))  # an instance without a public IP gets no VM
            if token:
                tokens[token] = (fp, res.id)
            return res

    InstanceBackend.run_instances = run_instances

    if VMS is not None:
        # TerminateInstances destroys the instance's VM (the address then is free again by itself).
        orig_terminate = InstanceBackend.terminate_instances

        def terminate_instances(self, instance_ids):
            out = orig_terminate(self, instance_ids)
            _destroy_vms([INSTANCE_VMS.pop(i.id) for i, _ in out if i.id in INSTANCE_VMS])
            return out

        InstanceBackend.terminate_instances = terminate_instances

        # /moto-api/reset wipes every instance: their VMs go too.
        orig_reset_vms = BackendDict.reset.__func__

        def reset_vms(cls) -> None:
            orig_reset_vms(cls)
            if INSTANCE_VMS:
                _destroy_vms(list(INSTANCE_VMS.values()))
                INSTANCE_VMS.clear()

        BackendDict.reset = classmethod(reset_vms)

    # (5) /moto-api/reset wipes IAM too: re-create the test user with the SAME key afterwards,
    #     so a reset between tests keeps the credentials file valid.
    if auth is not None:
        orig_reset = BackendDict.reset.__func__

        def reset(cls) -> None:
            orig_reset(cls)
            try:
                auth.provision()
                log("reset: IAM test user re-created")
            except Exception as ex:
                log(f"reset: could not re-create IAM user: {ex!r}")

        BackendDict.reset = classmethod(reset)


# --------------------------------------------------------------------------------------------
# --auth: an IAM user with an allow-all policy, created in-process
# --------------------------------------------------------------------------------------------
class AuthState:
    def __init__(self) -> None:
        self.access_key_id: str | None = None
        self.secret: str | None = None

    def provision(self) -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.iam.models import iam_backends

        iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
        if IAM_USER not in iam.users:
            iam.create_user(region_name=DEFAULT_REGION, user_name=IAM_USER, path="/")
        iam.put_user_policy(IAM_USER, "allow-all", json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        user = iam.get_user(IAM_USER)
        if self.access_key_id and any(k.access_key_id == self.access_key_id for k in user.access_keys):
            return
        key = iam.create_access_key(IAM_USER)
        if self.access_key_id is None:
            self.access_key_id, self.secret = key.access_key_id, key.secret_access_key
        else:  # after a reset: give the new key the old id/secret
            iam.access_keys.pop(key.access_key_id, None)
            key.access_key_id, key.secret_access_key = self.access_key_id, self.secret
            iam.access_keys[key.access_key_id] = key


# --------------------------------------------------------------------------------------------
# /_sfuctl/ control surface (WSGI middleware in front of moto's dispatcher)
# --------------------------------------------------------------------------------------------
def instances_summary() -> list[dict]:
    from moto.ec2.models import ec2_backends

    out = []
    for acct, per_region in list(dict.items(ec2_backends)):
        for region, be in list(dict.items(per_region)):
            for res in list(be.reservations.values()):
                for i in res.instances:
                    out.append({
                        "account": acct, "region": region, "reservation_id": res.id,
                        "instance_id": i.id, "state": i.state, "instance_type": i.instance_type,
                        "image_id": i.image_id, "key_name": i.key_name,
                        "public_ip": i.public_ip, "private_ip": i.private_ip,
                        "security_group_ids": [g.id for g in i.security_groups],
                        "client_token": i.client_token, "tags": be.tags.get(i.id, {}),
                        "vm": INSTANCE_VMS.get(i.id),
                    })
    return out


class ControlApp:
    PREFIX = "/_sfuctl/"

    def __init__(self, inner, pool: AddressPool, info: dict):
        self.inner = inner
        self.pool = pool
        self.info = info

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self.PREFIX):
            return self.inner(environ, start_response)
        try:
            status, body = self.handle(environ, path[len(self.PREFIX):].strip("/"))
        except ValueError as e:
            status, body = 400, {"error": str(e)}
        except Exception as e:  # pragma: no cover - debugging aid
            status, body = 500, {"error": repr(e)}
        data = (json.dumps(body, indent=1, default=str) + "\n").encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(data)))])
        return [data]

    def _body_addresses(self, environ) -> list[str]:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(n).decode() if n else ""
        raw = raw.strip()
        if raw.startswith("[") or raw.startswith("{"):
            j = json.loads(raw)
            items = j.get("addresses", []) if isinstance(j, dict) else j
            raw = " ".join(items)
        return parse_addresses(raw, "request body")

    def handle(self, environ, route: str):
        method = environ.get("REQUEST_METHOD", "GET")
        if route == "health":
            return 200, {"status": "ok", **self.info}
        if route == "pool" and method == "GET":
            return 200, self.pool.snapshot()
        if route in ("pool/add", "pool/remove", "pool/set"):
            if method != "POST":
                return 405, {"error": "POST needed"}
            addrs = self._body_addresses(environ)
            getattr(self.pool, route.split("/")[1])(addrs)
            return 200, self.pool.snapshot()
        if route == "state":
            return 200, {"instances": instances_summary(), "pool": self.pool.snapshot(),
                         "config": CONFIG}
        if route == "config":
            if method == "POST":
                n = int(environ.get("CONTENT_LENGTH") or 0)
                upd = json.loads(environ["wsgi.input"].read(n) or b"{}")
                for k, v in upd.items():
                    if k not in CONFIG:
                        raise ValueError(f"unknown config key {k!r}")
                    CONFIG[k] = type(CONFIG[k])(v)
            return 200, CONFIG
        return 404, {"error": f"unknown route /_sfuctl/{route}",
                     "routes": ["GET health", "GET pool", "POST pool/add|pool/remove|pool/set",
                                "GET state", "GET|POST config"]}


# --------------------------------------------------------------------------------------------
# start-up check: a real SigV4-signed EC2 request
# --------------------------------------------------------------------------------------------
def signed_probe(port: int, akid: str, secret: str, timeout: float = 2.0) -> int:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"http://127.0.0.1:{port}/"
    body = "Action=DescribeRegions&Version=2016-11-15"
    req = AWSRequest(method="POST", url=url, data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(Credentials(akid, secret), "ec2", DEFAULT_REGION).add_auth(req)
    r = urllib.request.Request(url, data=body.encode(), method="POST", headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            text = resp.read().decode()
            if "DescribeRegionsResponse" not in text:
                raise RuntimeError(f"unexpected probe answer: {text[:200]}")
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def parent_alive(pid: int | None, orig_ppid: int) -> bool:
    if pid is None:
        return os.getppid() == orig_ppid
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def main(argv: list[str] | None = None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    orig_ppid = os.getppid()

    if args.log_file:
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    if not os.path.isfile(args.amis_file):
        log(f"AMI file not found: {args.amis_file}")
        return 2

    # moto reads these at import time: set them before the first `import moto`.
    os.environ.update({
        "MOTO_ENABLE_KEYPAIR_VALIDATION": "1",
        "MOTO_ENABLE_AMI_VALIDATION": "1",
        "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "1",
        "MOTO_AMIS_PATH": os.path.abspath(args.amis_file),
    })
    if args.auth:
        os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    else:
        os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # a missing profile breaks botocore in moto
        os.environ.pop(var, None)

    stop = threading.Event()

    def on_signal(signum, _frame):
        log(f"signal {signum}: stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    if args.boot_vms:
        global VMS
        sys.path.insert(0, os.path.dirname(HERE))
        from freshvm import FreshVms, prerequisites_missing
        why = prerequisites_missing()
        if why:
            log(f"--boot-vms: {why}")
            return 2
        VMS = FreshVms()
    pool = AddressPool(args.pool, args.address_pool_file, enabled=not args.random_public_ips)
    auth = AuthState() if args.auth else None
    CONFIG["client_token_idempotency"] = not args.no_client_token
    CONFIG["pool_exhausted_status"] = args.pool_exhausted_status
    install_patches(pool, auth)

    info = {"pid": os.getpid(), "auth": bool(args.auth), "region": DEFAULT_REGION,
            "amis_file": os.path.abspath(args.amis_file), "pool_enabled": pool.enabled}
    app = ControlApp(DomainDispatcherApplication(create_backend_app), pool, info)
    try:
        server = make_server("127.0.0.1", args.port, app, threaded=True)
    except OSError as e:
        log(f"cannot bind 127.0.0.1:{args.port}: {e}")
        return 3
    port = server.server_port
    info["port"] = port
    os.environ["MOTO_PORT"] = str(port)
    th = threading.Thread(target=server.serve_forever, name="moto-http", daemon=True)
    th.start()

    # Build the us-east-1 EC2 backend now (default VPC, subnets, AMIs) so the first test
    # request is not the slow one, and create the IAM user in auth mode.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    t_import = time.monotonic() - t0
    ec2_backends[DEFAULT_ACCOUNT_ID][DEFAULT_REGION]
    if auth is not None:
        auth.provision()
        akid, secret = auth.access_key_id, auth.secret
    else:
        akid, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    deadline = time.monotonic() + args.startup_timeout
    while True:
        try:
            status = signed_probe(port, akid, secret)
            if status == 200:
                break
            raise RuntimeError(f"HTTP {status}")
        except Exception as e:  # noqa: BLE001
            if time.monotonic() > deadline:
                log(f"server did not answer a signed EC2 request: {e!r}")
                server.shutdown()
                return 4
            time.sleep(0.05)

    written: list[str] = []
    if auth is not None:
        write_atomic(args.credentials_file,
                     f"AWS_ACCESS_KEY_ID={akid}\nAWS_SECRET_ACCESS_KEY={secret}\n"
                     f"AWS_DEFAULT_REGION={DEFAULT_REGION}\nAWS_ENDPOINT_URL=http://127.0.0.1:{port}\n",
                     mode=0o600)
        written.append(os.path.abspath(args.credentials_file))
    if args.port_file:
        write_atomic(args.port_file, f"{port}\n")
        written.append(os.path.abspath(args.port_file))
    log(f"ready on http://127.0.0.1:{port}/ in {time.monotonic() - t0:.2f}s (imports {t_import:.2f}s) "
        f"(pid {os.getpid()}, auth={'on' if auth else 'off'}, "
        f"pool={'off' if not pool.enabled else ','.join(pool.addresses()) or '(empty)'})")

    watch = args.parent_pid
    try:
        while not stop.is_set():
            stop.wait(0.25)
            if args.exit_with_parent and not parent_alive(watch, orig_ppid):
                log("parent is gone: stopping")
                break
    finally:
        server.shutdown()
        if VMS is not None:
            VMS.destroy_all()  # the launcher's exit takes its VMs with it
            log("boot-vms: all VMs destroyed")
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
