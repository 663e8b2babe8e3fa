"""Fresh cloud-like VMs for the cloud fakes (`--boot-vms`): a thin wrapper around scripts/testbed/vm.

A fake that creates a server calls `boot()` with what the client sent (user-data, the registered SSH public keys)
and the provider's login user, and hands out the returned address as the server's public IPv4. Every VM belongs to
this process (`owner_pid`): `destroy_all()` at exit removes them, and if the process is killed the VMs' runners
destroy them within a few seconds anyway (`scripts/testbed/vm sweep` does the same on demand).

Needs root and `scripts/testbed/install` (which runs `scripts/testbed/vm install`). Standard library only.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
VM_TOOL = os.environ.get("SFUCTL_TESTBED_VM",
                         os.path.normpath(os.path.join(HERE, "..", "..", "scripts", "testbed", "vm")))
INSTALL_HINT = "run scripts/testbed/install (as root) to set up the fresh-VM test bed"


class FreshVmError(RuntimeError):
    pass


def prerequisites_missing() -> str | None:
    """None when VMs can be booted here; otherwise why not, naming scripts/testbed/install."""
    if os.geteuid() != 0:
        return f"fresh VMs need root (namespaces, mounts, a bridge); {INSTALL_HINT}"
    if not os.access(VM_TOOL, os.X_OK):
        return f"{VM_TOOL} is missing or not executable"
    for tool in ("/usr/bin/systemd-nspawn", "/usr/sbin/apt-cacher-ng"):
        if not os.path.exists(tool):
            return f"{tool} is missing: {INSTALL_HINT}"
    cache = os.environ.get("SFVM_CACHE", "/var/cache/sfuctl-testbed")
    try:
        with open(os.path.join(cache, "current")) as f:
            h = f.read().strip()
    except OSError:
        return f"the VM image is not built ({cache}/current is missing): {INSTALL_HINT}"
    if not os.path.exists(os.path.join(cache, f"lower-bookworm-{h}", ".sfvm-complete")):
        return f"the VM image {h} is not unpacked: {INSTALL_HINT}"
    return None


def _vm(*args: str, input_text: str | None = None, timeout: float = 120) -> str:
    r = subprocess.run([VM_TOOL, *args], input=input_text, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise FreshVmError(f"scripts/testbed/vm {args[0]} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


class FreshVms:
    """Boots throwaway fresh VMs for a cloud fake; every VM is destroyed by destroy_all() (call it at fake exit)."""

    def __init__(self, owner_pid: int | None = None):
        self.owner_pid = owner_pid or os.getpid()
        # VM names are global on this machine: make ours unique to this process and this object
        self._prefix = f"p{self.owner_pid}-{secrets.token_hex(2)}"
        self._vms: dict[str, dict] = {}   # caller's name -> {"vm": tool name, "address": ip}
        self._lock = threading.Lock()

    def _tool_name(self, name: str) -> str:
        clean = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.") or "vm"
        return f"{self._prefix}-{clean}"[:63]

    def boot(self, name: str, user_data: bytes | None, public_keys: list[str], login_user: str,
             hostname: str | None = None) -> str:
        """Creates and starts a VM, returns its IPv4 at once; boot continues in the background."""
        if login_user not in ("root", "ubuntu"):
            raise ValueError(f"login_user must be 'root' or 'ubuntu', not {login_user!r}")
        why = prerequisites_missing()
        if why:
            raise FreshVmError(why)
        with self._lock:
            if name in self._vms:
                raise FreshVmError(f"a VM named {name!r} is already booted by this fake")
            self._vms[name] = {"vm": self._tool_name(name), "address": None}
        vm = self._vms[name]["vm"]
        if isinstance(user_data, str):
            user_data = user_data.encode()
        with tempfile.NamedTemporaryFile(prefix="sfvm-ud-", delete=False) as f:
            f.write(user_data or b"")
            ud = f.name
        try:
            args = ["create", vm, "--user-data", ud, "--login", login_user, "--owner-pid", str(self.owner_pid),
                    "--hostname", hostname or name]
            for k in public_keys:
                args += ["--public-key", k.strip()]
            try:
                address = _vm(*args).strip()
            except Exception:
                with self._lock:
                    self._vms.pop(name, None)
                raise
        finally:
            os.unlink(ud)
        with self._lock:
            self._vms[name]["address"] = address
        return address

    def address(self, name: str) -> str | None:
        v = self._vms.get(name)
        return v and v["address"]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._vms)

    def destroy(self, name: str) -> None:
        with self._lock:
            v = self._vms.pop(name, None)
        if v:
            _vm("destroy", v["vm"])

    def destroy_all(self) -> None:
        with self._lock:
            vms = [v["vm"] for v in self._vms.values()]
            self._vms.clear()
        if vms:
            _vm("destroy", *vms)
