"""Self-tests of the moto-based EC2 fake (tests/fakes/aws/launch.py).

    /opt/sfuctl-testbed/venv/bin/python -m pytest tests/fakes -q        # with the DigitalOcean tests
    /opt/sfuctl-testbed/venv/bin/python -m pytest tests/fakes/aws -q -s  # -s shows the timings

Traffic rule: every request goes to 127.0.0.1. Addresses that moto returns (pool addresses,
private IPs, DNS names) are only compared as strings, never connected to.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
for _v in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(_v, None)

boto3 = pytest.importorskip("boto3")
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCH = os.path.join(HERE, "launch.py")
REGION = "us-east-1"
CANONICAL = "099720109477"
# moto answers in xmlns "http://ec2.amazonaws.com/doc/2016-11-15" (NO trailing slash); real EC2 uses
# ".../2016-11-15/". sfuctl's parser must ignore the namespace; so do these tests.
MOTO_XMLNS = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15"'
NS = ""  # find() paths below run on namespace-stripped trees (see parse())
POOL = ["10.200.101.2", "10.200.102.2"]
FAKE_KEY = ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
NOBLE_AMD64 = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
NEWEST_NOBLE_AMD64 = "ami-0a1b2c3d4e5f60002"
TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------------------------
# launcher processes
# --------------------------------------------------------------------------------------------
class Fake:
    def __init__(self, tmp, name: str, *extra: str, wrap_parent: bool = False):
        self.dir = tmp / name
        self.dir.mkdir()
        self.port_file = self.dir / "port"
        self.log_file = self.dir / "moto.log"
        self.creds_file = self.dir / "aws.env"
        cmd = [sys.executable, LAUNCH, "--port", "0", "--port-file", str(self.port_file),
               "--log-file", str(self.log_file), "--exit-with-parent", *extra]
        if wrap_parent:  # an intermediate parent that the test can kill
            cmd = [sys.executable, "-c",
                   "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(120)", *cmd]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=str(self.dir))
        self.port: int | None = None
        self.startup = None

    def wait_ready(self, timeout: float = 30.0) -> "Fake":
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"launcher exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"launcher not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        self.startup = time.monotonic() - self.t0
        self.port = int(self.port_file.read_text().strip())
        return self

    def log(self) -> str:
        try:
            return self.log_file.read_text()[-4000:]
        except OSError:
            return "(no log)"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, route: str, body: str | bytes | None = None) -> dict:
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(f"{self.url}/_sfuctl/{route}", data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"status": "ok"}

    def client(self, key=FAKE_KEY, service: str = "ec2"):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key[0], aws_secret_access_key=key[1],
                            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                          connect_timeout=5, read_timeout=30))

    def raw(self, params: dict, key=FAKE_KEY, service: str = "ec2") -> tuple[int, str]:
        """A hand-signed Query API call, the way sfuctl will make it."""
        from urllib.parse import urlencode

        body = urlencode({"Version": "2016-11-15", **params})
        req = AWSRequest(method="POST", url=self.url + "/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(Credentials(*key), service, REGION).add_auth(req)
        r = urllib.request.Request(self.url + "/", data=body.encode(), method="POST",
                                   headers=dict(req.headers.items()))
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("awsfake")
    pool_file = tmp / "pool.txt"
    pool_file.write_text("# one address per line\n10.200.201.2\n")
    # Started together: the two start-ups overlap (each takes ~2.5-4 s on this 2-core machine).
    plain = Fake(tmp, "plain", "--address-pool", ",".join(POOL))
    auth = Fake(tmp, "auth", "--auth", "--credentials-file", str(tmp / "auth" / "aws.env"),
                "--address-pool-file", str(pool_file), "--pool-exhausted-status", "400")
    try:
        plain.wait_ready()
        auth.wait_ready()
        TIMINGS["startup plain (s)"] = plain.startup
        TIMINGS["startup auth (s)"] = auth.startup
        yield {"plain": plain, "auth": auth, "pool_file": pool_file}
    finally:
        plain.stop()
        auth.stop()
        if TIMINGS:
            print("\n[aws fake timings] " + ", ".join(f"{k}={v:.3f}" for k, v in TIMINGS.items()))


@pytest.fixture()
def plain(fakes):
    f = fakes["plain"]
    f.reset()
    f.control("pool/set", ",".join(POOL))
    f.control("config", json.dumps({"client_token_idempotency": True}))
    return f


def parse(body: str) -> ET.Element:
    root = ET.fromstring(body)
    for el in root.iter():
        el.tag = el.tag.split("}", 1)[-1]
    return root


def err(excinfo) -> tuple[str, int, str]:
    e = excinfo.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"], e["Error"].get("Message", "")


def ed25519_openssh_line() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.generate().public_key()
    return pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" sfuctl-test\n"


def setup_key_and_sg(f: Fake, ec2) -> str:
    ec2.import_key_pair(KeyName="sfu-key", PublicKeyMaterial=ed25519_openssh_line())
    return ec2.create_security_group(GroupName="sfu-sg", Description="SFU media")["GroupId"]


def run(ec2, sg: str, token: str, name: str, **over):
    args = dict(ImageId=NEWEST_NOBLE_AMD64, InstanceType="c6i.large", MinCount=1, MaxCount=1,
                KeyName="sfu-key", SecurityGroupIds=[sg], ClientToken=token,
                UserData="#cloud-config\nruncmd: [echo sfu]\n",  # boto3 base64-encodes it
                TagSpecifications=[{"ResourceType": "instance",
                                    "Tags": [{"Key": "Name", "Value": name},
                                             {"Key": "sfu-deploy", "Value": "demo"}]}])
    args.update(over)
    return ec2.run_instances(**args)


def all_instances(ec2) -> list[dict]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
def test_startup_files_and_health(fakes):
    plain, auth = fakes["plain"], fakes["auth"]
    for f in (plain, auth):
        assert f.port_file.read_text().endswith("\n")
        assert 1024 <= f.port < 65536
        h = f.control("health")
        assert h["status"] == "ok" and h["port"] == f.port and h["pool_enabled"] is True
        assert f.startup < 30
    assert plain.port != auth.port
    assert plain.control("health")["auth"] is False and auth.control("health")["auth"] is True
    # the usual moto surface is there too
    with urllib.request.urlopen(f"{plain.url}/moto-api/data.json", timeout=10) as r:
        assert "ec2" in json.loads(r.read())


def test_describe_images_pick_newest(plain):
    ec2 = plain.client()
    imgs = ec2.describe_images(Owners=[CANONICAL], Filters=[
        {"Name": "name", "Values": [NOBLE_AMD64]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    assert {i["ImageId"] for i in imgs} == {"ami-0a1b2c3d4e5f60001", "ami-0a1b2c3d4e5f60002",
                                            "ami-0a1b2c3d4e5f60003"}
    assert all(i["OwnerId"] == CANONICAL and i["Architecture"] == "x86_64" for i in imgs)
    newest = max(imgs, key=lambda i: i["CreationDate"])
    assert newest["ImageId"] == NEWEST_NOBLE_AMD64
    assert newest["Name"].endswith("-20250610") and newest["CreationDate"].startswith("2025-06-10")

    arm = ec2.describe_images(Owners=[CANONICAL], Filters=[
        {"Name": "name", "Values": [NOBLE_AMD64.replace("amd64", "arm64")]},
        {"Name": "state", "Values": ["available"]}])["Images"]
    assert max(arm, key=lambda i: i["CreationDate"])["ImageId"] == "ami-0a1b2c3d4e5f60012"
    assert {i["Architecture"] for i in arm} == {"arm64"}

    # the traps in amis.json: without the owner filter a name-squatter shows up (and is newest);
    # without the state filter a pending build shows up.
    no_owner = ec2.describe_images(Filters=[{"Name": "name", "Values": [NOBLE_AMD64]}])["Images"]
    assert max(no_owner, key=lambda i: i["CreationDate"])["OwnerId"] == "111122223333"
    no_state = ec2.describe_images(Owners=[CANONICAL], Filters=[{"Name": "name", "Values": [NOBLE_AMD64]}])["Images"]
    assert "ami-0a1b2c3d4e5f60004" in {i["ImageId"] for i in no_state}
    jammy = ec2.describe_images(Owners=[CANONICAL], Filters=[
        {"Name": "name", "Values": ["ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-*"]}])["Images"]
    assert [i["ImageId"] for i in jammy] == ["ami-0a1b2c3d4e5f60021"]

    # the raw wire form sfuctl will send
    status, body = plain.raw({"Action": "DescribeImages", "Owner.1": CANONICAL,
                              "Filter.1.Name": "name", "Filter.1.Value.1": NOBLE_AMD64,
                              "Filter.2.Name": "state", "Filter.2.Value.1": "available"})
    assert status == 200 and MOTO_XMLNS in body
    items = parse(body).findall(f"{NS}imagesSet/{NS}item")
    assert max(items, key=lambda i: i.findtext(f"{NS}creationDate")).findtext(f"{NS}imageId") == NEWEST_NOBLE_AMD64


def test_keypair_and_security_group_rules(plain):
    ec2 = plain.client()
    line = ed25519_openssh_line()
    # raw ImportKeyPair: PublicKeyMaterial = base64 of the OpenSSH line (boto3 does this itself)
    status, body = plain.raw({"Action": "ImportKeyPair", "KeyName": "sfu-key",
                              "PublicKeyMaterial": base64.b64encode(line).decode()})
    assert status == 200, body
    root = parse(body)
    assert root.findtext(f"{NS}keyName") == "sfu-key" and root.findtext(f"{NS}keyPairId").startswith("key-")
    with pytest.raises(ClientError) as ei:
        ec2.import_key_pair(KeyName="sfu-key", PublicKeyMaterial=line)
    assert err(ei)[0] == "InvalidKeyPair.Duplicate"

    sg = ec2.create_security_group(GroupName="sfu-sg", Description="SFU media", TagSpecifications=[
        {"ResourceType": "security-group", "Tags": [{"Key": "sfu-deploy", "Value": "demo"}]}])["GroupId"]
    media = {"IpProtocol": "udp", "FromPort": 40000, "ToPort": 41000,
             "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "sfu-media"}],
             "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        media, {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}])
    with pytest.raises(ClientError) as ei:
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[media])
    assert err(ei)[:2] == ("InvalidPermission.Duplicate", 400)

    g = ec2.describe_security_groups(Filters=[{"Name": "tag:sfu-deploy", "Values": ["demo"]}])["SecurityGroups"]
    assert [x["GroupId"] for x in g] == [sg]
    udp = [p for p in g[0]["IpPermissions"] if p["IpProtocol"] == "udp"]
    assert len(udp) == 1 and (udp[0]["FromPort"], udp[0]["ToPort"]) == (40000, 41000)
    assert udp[0]["IpRanges"] == [{"CidrIp": "0.0.0.0/0", "Description": "sfu-media"}]
    assert udp[0]["Ipv6Ranges"][0]["CidrIpv6"] == "::/0"

    ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[media])
    g = ec2.describe_security_groups(GroupIds=[sg])["SecurityGroups"][0]
    assert [p["IpProtocol"] for p in g["IpPermissions"]] == ["tcp"]
    with pytest.raises(ClientError) as ei:
        ec2.revoke_security_group_ingress(GroupId=sg, IpPermissions=[media])
    assert err(ei)[0] == "InvalidPermission.NotFound"


def test_run_instances_takes_pool_addresses(plain):
    ec2 = plain.client()
    sg = setup_key_and_sg(plain, ec2)

    r1 = run(ec2, sg, "tok-1", "sfu-a")
    i1 = r1["Instances"][0]["InstanceId"]
    d = ec2.describe_instances(InstanceIds=[i1])["Reservations"][0]["Instances"][0]
    assert d["State"]["Name"] == "running"
    assert d["PublicIpAddress"] == POOL[0]
    assert d["PublicDnsName"] == "ec2-10-200-101-2.compute-1.amazonaws.com"  # moto's form; never resolve it
    assert d["NetworkInterfaces"][0]["Association"]["PublicIp"] == POOL[0]
    assert d["KeyName"] == "sfu-key" and d["InstanceType"] == "c6i.large" and d["ImageId"] == NEWEST_NOBLE_AMD64
    assert [g["GroupId"] for g in d["SecurityGroups"]] == [sg]
    assert {"Key": "Name", "Value": "sfu-a"} in d["Tags"]
    ud = ec2.describe_instance_attribute(InstanceId=i1, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(ud).startswith(b"#cloud-config")

    # the same in the raw XML that sfuctl parses: ipAddress, dnsName and the NIC association agree
    status, body = plain.raw({"Action": "DescribeInstances", "InstanceId.1": i1})
    assert status == 200
    item = parse(body).find(f"{NS}reservationSet/{NS}item/{NS}instancesSet/{NS}item")
    assert item.findtext(f"{NS}ipAddress") == POOL[0]
    assert item.findtext(f"{NS}dnsName") == "ec2-10-200-101-2.compute-1.amazonaws.com"
    assert item.findtext(f"{NS}networkInterfaceSet/{NS}item/{NS}association/{NS}publicIp") == POOL[0]
    assert item.findtext(f"{NS}instanceState/{NS}name") == "running"

    # ClientToken: a retried call returns the first instance, no second one (moto alone would make one)
    again = run(ec2, sg, "tok-1", "sfu-a")
    assert [i["InstanceId"] for i in again["Instances"]] == [i1]
    assert again["ReservationId"] == r1["ReservationId"]
    assert len(all_instances(ec2)) == 1
    with pytest.raises(ClientError) as ei:
        run(ec2, sg, "tok-1", "sfu-a", InstanceType="c6i.xlarge")
    assert err(ei)[:2] == ("IdempotentParameterMismatch", 400)

    i2 = run(ec2, sg, "tok-2", "sfu-b")["Instances"][0]["InstanceId"]
    d2 = ec2.describe_instances(InstanceIds=[i2])["Reservations"][0]["Instances"][0]
    assert d2["PublicIpAddress"] == POOL[1]
    assert d2["NetworkInterfaces"][0]["Association"]["PublicIp"] == POOL[1]

    # pool of two is used up: loud failure, HTTP 500 like AWS, and nothing is left behind
    vols_before = len(ec2.describe_volumes()["Volumes"])
    enis_before = len(ec2.describe_network_interfaces()["NetworkInterfaces"])
    with pytest.raises(ClientError) as ei:
        run(ec2, sg, "tok-3", "sfu-c")
    code, status, msg = err(ei)
    assert (code, status) == ("InsufficientInstanceCapacity", 500)
    assert "pool exhausted" in msg and POOL[0] in msg
    insts = all_instances(ec2)
    assert sorted(i["InstanceId"] for i in insts) == sorted([i1, i2])
    assert all(i["State"]["Name"] == "running" for i in insts)
    assert not ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["sfu-c"]}])["Reservations"]
    assert len(ec2.describe_volumes()["Volumes"]) == vols_before
    assert len(ec2.describe_network_interfaces()["NetworkInterfaces"]) == enis_before
    assert not [t for t in ec2.describe_tags()["Tags"] if t["Value"] == "sfu-c"]
    st = plain.control("state")
    assert len(st["instances"]) == 2 and st["pool"]["free"] == []
    # a failed call leaves its token unused: the retry after capacity returns works normally

    # MinCount=2 with one free address: all-or-nothing (the first instance is rolled back too)
    ec2.terminate_instances(InstanceIds=[i2])
    with pytest.raises(ClientError) as ei:
        run(ec2, sg, "tok-4", "sfu-d", MinCount=2, MaxCount=2)
    assert err(ei)[0] == "InsufficientInstanceCapacity"
    assert plain.control("pool")["free"] == [POOL[1]]
    assert len(all_instances(ec2)) == 2

    # terminate gives the address back: the next instance gets it
    ec2.terminate_instances(InstanceIds=[i1])
    d1 = ec2.describe_instances(InstanceIds=[i1])["Reservations"][0]["Instances"][0]
    assert d1["State"]["Name"] == "terminated" and "PublicIpAddress" not in d1
    assert plain.control("pool")["free"] == POOL
    i3 = run(ec2, sg, "tok-3", "sfu-c")["Instances"][0]["InstanceId"]
    assert ec2.describe_instances(InstanceIds=[i3])["Reservations"][0]["Instances"][0]["PublicIpAddress"] == POOL[0]

    # more addresses at run time through the control endpoint
    snap = plain.control("pool/add", "10.200.103.2")
    assert snap["pool"] == POOL + ["10.200.103.2"] and snap["in_use"] == {POOL[0]: i3}
    run(ec2, sg, "tok-5", "sfu-e")
    i6 = run(ec2, sg, "tok-6", "sfu-f")["Instances"][0]["InstanceId"]
    assert ec2.describe_instances(InstanceIds=[i6])["Reservations"][0]["Instances"][0]["PublicIpAddress"] == "10.200.103.2"

    # stop releases the address (as on AWS), start takes one again
    ec2.stop_instances(InstanceIds=[i6])
    assert "10.200.103.2" in plain.control("pool")["free"]
    ec2.start_instances(InstanceIds=[i6])
    assert ec2.describe_instances(InstanceIds=[i6])["Reservations"][0]["Instances"][0]["PublicIpAddress"] == "10.200.103.2"

    # Elastic IPs come from the pool too (moto alone makes up 127.x.y.z)
    ec2.terminate_instances(InstanceIds=[i6])
    assert ec2.allocate_address(Domain="vpc")["PublicIp"] == "10.200.103.2"
    with pytest.raises(ClientError) as ei:
        ec2.allocate_address(Domain="vpc")
    assert err(ei)[:2] == ("AddressLimitExceeded", 400)

    # after a reset every address is free again
    plain.reset()
    assert plain.control("pool")["free"] == POOL + ["10.200.103.2"]


def test_client_token_plain_moto_behaviour(plain):
    """Documents what moto 5.2.1 does on its own: ClientToken is stored, never checked."""
    ec2 = plain.client()
    sg = setup_key_and_sg(plain, ec2)
    plain.control("config", json.dumps({"client_token_idempotency": False}))
    try:
        a = run(ec2, sg, "same", "x")["Instances"][0]["InstanceId"]
        b = run(ec2, sg, "same", "x")["Instances"][0]["InstanceId"]
        assert a != b and len(all_instances(ec2)) == 2
    finally:
        plain.control("config", json.dumps({"client_token_idempotency": True}))


def test_validation_switches(plain):
    ec2 = plain.client()
    sg = setup_key_and_sg(plain, ec2)
    cases = [({"KeyName": "no-such-key"}, "InvalidKeyPair.NotFound"),
             ({"ImageId": "ami-00000000"}, "InvalidAMIID.NotFound"),
             ({"InstanceType": "zz.huge"}, "InvalidInstanceType.NotFound")]
    for n, (over, code) in enumerate(cases):
        with pytest.raises(ClientError) as ei:
            run(ec2, sg, f"bad-{n}", "bad", **over)
        assert err(ei)[:2] == (code, 400), over
    assert all_instances(ec2) == []
    assert plain.control("pool")["free"] == POOL
    with pytest.raises(ClientError) as ei:
        ec2.run_instances(ImageId=NEWEST_NOBLE_AMD64, InstanceType="c6i.large", MinCount=1, MaxCount=1,
                          KeyName="sfu-key", DryRun=True)
    assert err(ei)[:2] == ("DryRunOperation", 412)


def test_routing_trap_without_authorization_header(plain):
    req = urllib.request.Request(plain.url + "/", data=b"Action=DescribeRegions&Version=2016-11-15",
                                 method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert "ListAllMyBucketsResult" in r.read().decode()  # S3, not EC2


def test_auth_mode(fakes):
    f = fakes["auth"]
    assert stat.S_IMODE(os.stat(f.creds_file).st_mode) == 0o600
    env = dict(line.split("=", 1) for line in f.creds_file.read_text().splitlines())
    key = (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    assert key[0].startswith("AKIA") and len(key[1]) == 40
    assert env["AWS_ENDPOINT_URL"] == f.url and env["AWS_DEFAULT_REGION"] == REGION

    ec2 = f.client(key)
    assert any(r["RegionName"] == REGION for r in ec2.describe_regions()["Regions"])
    status, _ = f.raw({"Action": "DescribeVpcs"}, key=key)
    assert status == 200

    for bad in ((key[0], "x" * 40), ("AKIAIOSFODNN7EXAMPLE", key[1])):
        with pytest.raises(ClientError) as ei:
            f.client(bad).describe_regions()
        assert err(ei)[:2] == ("AuthFailure", 401)
    status, body = f.raw({"Action": "DescribeVpcs"}, key=(key[0], "y" * 40))
    assert status == 401 and "<Code>AuthFailure</Code>" in body

    # a reset between tests keeps the credentials valid (the launcher re-creates the IAM user)
    f.reset()
    assert ec2.describe_vpcs()["Vpcs"]
    with pytest.raises(ClientError) as ei:
        f.client((key[0], "z" * 40)).describe_vpcs()
    assert err(ei)[1] == 401

    # pool from --address-pool-file, extended by appending to the file at run time;
    # this server was started with --pool-exhausted-status 400
    ec2.import_key_pair(KeyName="sfu-key", PublicKeyMaterial=ed25519_openssh_line())
    sg = ec2.create_security_group(GroupName="sfu-sg", Description="SFU")["GroupId"]
    a = run(ec2, sg, "p1", "a")["Instances"][0]["InstanceId"]
    with pytest.raises(ClientError) as ei:
        run(ec2, sg, "p2", "b")
    assert err(ei)[:2] == ("InsufficientInstanceCapacity", 400)
    with open(fakes["pool_file"], "a") as fh:
        fh.write("10.200.202.2\n")
    b = run(ec2, sg, "p2", "b")["Instances"][0]["InstanceId"]
    ips = {i["InstanceId"]: i.get("PublicIpAddress") for i in all_instances(ec2)}
    assert ips == {a: "10.200.201.2", b: "10.200.202.2"}


def test_request_latency(plain):
    ec2 = plain.client()
    ec2.describe_instances()
    n = 30
    t = time.monotonic()
    for _ in range(n):
        ec2.describe_instances()
    TIMINGS["DescribeInstances boto3 (ms)"] = (time.monotonic() - t) / n * 1000
    t = time.monotonic()
    for _ in range(n):
        assert plain.raw({"Action": "DescribeInstances"})[0] == 200
    TIMINGS["DescribeInstances raw (ms)"] = (time.monotonic() - t) / n * 1000
    sg = setup_key_and_sg(plain, ec2)
    t = time.monotonic()
    iid = run(ec2, sg, "lat", "lat")["Instances"][0]["InstanceId"]
    TIMINGS["RunInstances (ms)"] = (time.monotonic() - t) * 1000
    t = time.monotonic()
    ec2.terminate_instances(InstanceIds=[iid])
    TIMINGS["TerminateInstances (ms)"] = (time.monotonic() - t) * 1000
    assert TIMINGS["DescribeInstances boto3 (ms)"] < 1000


def test_exit_with_parent(tmp_path):
    f = Fake(tmp_path, "orphan", "--address-pool", "10.200.250.2", wrap_parent=True).wait_ready()
    pid = f.control("health")["pid"]
    assert pid != f.proc.pid  # the launcher is the grandchild
    f.proc.kill()  # the parent dies without cleaning up
    f.proc.wait()
    t = time.monotonic()
    while time.monotonic() - t < 10:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("launcher outlived its parent by 10 s")
    TIMINGS["exit after parent death (s)"] = time.monotonic() - t
    assert not f.port_file.exists()  # cleaned up on the way out
    assert "parent is gone" in f.log()
