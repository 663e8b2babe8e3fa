//! The AWS EC2 fake (`tests/fakes/aws/launch.py`, moto 5.2.1), one per test on its own loopback port.
//!
//! [`Moto::start`] runs the launcher from the test bed's venv with `--exit-with-parent`, waits for its port file
//! (written only once moto answered a signed EC2 request) and returns a guard that kills it on drop. Public
//! addresses come only from the `--address-pool` the test passes (its namespace hosts), so nothing ever
//! connects to an address moto invented. A missing venv panics with a pointer to `scripts/testbed/fake-deps`:
//! these tests never skip.
//!
//! [`Moto::inventory`] reads what moto holds with boto3 (from the same venv): an independent client, so the
//! assertions after `down` do not trust sfuctl's own reading of EC2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::api_fake::PYTHON;

/// The access key used when signatures are not checked (moto accepts any).
const OPEN_KEY: (&str, &str) = ("AKIDSFUCTLTEST000000", "sfuctl-open-moto-secret");

/// A running moto. Dropping it stops it.
pub struct Moto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    key: (String, String),
    auth: bool,
}

impl Moto {
    /// Starts moto with extra launcher flags (`--address-pool`, `--pool-exhausted-status`, ...), signatures not
    /// checked.
    pub fn start(args: &[&str]) -> Moto {
        Self::launch(args, false)
    }

    /// Starts moto in IAM mode: every request must be signed with [`Moto::access_key`] / [`Moto::secret_key`].
    pub fn start_with_auth(args: &[&str]) -> Moto {
        Self::launch(args, true)
    }

    fn launch(args: &[&str], auth: bool) -> Moto {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: run `scripts/testbed/fake-deps` (as root) to install moto for the AWS fake");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::Builder::new().prefix("sfuctl-moto-").tempdir().expect("temp dir");
        let (port_file, log, creds) = (dir.path().join("port"), dir.path().join("moto.log"), dir.path().join("aws.env"));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(repo.join("tests/fakes/aws/launch.py"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--log-file")
            .arg(&log)
            .arg("--exit-with-parent")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.arg("--auth").arg("--credentials-file").arg(&creds);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}; run `scripts/testbed/fake-deps`"));
        let mut moto = Moto { child, port: 0, dir, key: (OPEN_KEY.0.into(), OPEN_KEY.1.into()), auth };
        let started = Instant::now();
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok()) {
                moto.port = port;
                break;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited ({status}) before it listened:\n{}", moto.log());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "moto did not listen within 60 s:\n{}", moto.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        if auth {
            let text = std::fs::read_to_string(&creds).expect("the launcher writes the credentials file before the port file");
            let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_else(|| panic!("{k} missing in {text}")).to_string();
            moto.key = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"));
        }
        moto
    }

    /// The endpoint (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id moto accepts.
    pub fn access_key(&self) -> &str {
        &self.key.0
    }

    /// Its secret.
    pub fn secret_key(&self) -> &str {
        &self.key.1
    }

    /// Whether signatures are checked.
    pub fn checks_signatures(&self) -> bool {
        self.auth
    }

    /// What the launcher and moto logged (requests, pool allocations, tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// `GET /_sfuctl/state`: every instance (id, state, image, key, public IP, groups, client token, tags) and the
    /// address pool.
    pub fn state(&self) -> Value {
        self.get("/_sfuctl/state")
    }

    /// Every instance moto holds as `(id, state)`.
    pub fn instances(&self) -> Vec<(String, String)> {
        self.state()["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|i| (text(&i["id"]).or_else(|| text(&i["instance_id"])).unwrap_or_default(), text(&i["state"]).unwrap_or_default()))
            .collect()
    }

    /// What moto holds, read with boto3: `{"instances": [{id, state, tags, ip}], "groups": [{id, name, tags,
    /// ingress}], "keys": [{name, tags}]}` (tags as `{key: value}`).
    pub fn inventory(&self) -> Value {
        let script = r#"
import boto3, json, sys
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
tags = lambda t: {x["Key"]: x["Value"] for x in (t or [])}
out = {"instances": [], "groups": [], "keys": []}
for r in ec2.describe_instances()["Reservations"]:
    for i in r["Instances"]:
        out["instances"].append({"id": i["InstanceId"], "state": i["State"]["Name"], "tags": tags(i.get("Tags")), "ip": i.get("PublicIpAddress"), "image": i.get("ImageId"), "groups": [g["GroupId"] for g in i.get("SecurityGroups", [])]})
for g in ec2.describe_security_groups()["SecurityGroups"]:
    out["groups"].append({"id": g["GroupId"], "name": g["GroupName"], "tags": tags(g.get("Tags")), "ingress": g["IpPermissions"], "egress": g["IpPermissionsEgress"]})
for k in ec2.describe_key_pairs()["KeyPairs"]:
    out["keys"].append({"name": k["KeyName"], "tags": tags(k.get("Tags"))})
print(json.dumps(out, default=str))
"#;
        let out = Command::new(PYTHON)
            .args(["-c", script, &self.url(), self.access_key(), self.secret_key()])
            .stdin(Stdio::null())
            .output()
            .expect("run boto3");
        assert!(out.status.success(), "boto3 inventory failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        serde_json::from_slice(&out.stdout).expect("inventory JSON")
    }

    /// Launches someone else's instance out of band (tags `Name=example.com`, `web`), as another tool would; returns
    /// its ID.
    pub fn run_foreign_instance(&self) -> String {
        let script = r#"
import boto3, sys
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
image = ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
r = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "example.com"}, {"Key": "web", "Value": ""}]}])
print(r["Instances"][0]["InstanceId"])
"#;
        let out = Command::new(PYTHON).args(["-c", script, &self.url(), self.access_key(), self.secret_key()]).stdin(Stdio::null()).output().expect("run boto3");
        assert!(out.status.success(), "boto3 run_instances failed: {}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What of deployment `name` moto still holds: instances with its tag that are not terminated, groups named
    /// `sfuctl-<name>` or tagged with it, key pairs named `sfuctl-<name>`.
    pub fn leftovers(&self, name: &str) -> Vec<String> {
        let inv = self.inventory();
        let ours = |v: &Value| v["tags"]["sfuctl"] == name;
        let mut left = Vec::new();
        for i in inv["instances"].as_array().into_iter().flatten() {
            if ours(i) && i["state"] != "terminated" {
                left.push(format!("instance {} ({})", i["id"], i["state"]));
            }
        }
        for g in inv["groups"].as_array().into_iter().flatten() {
            if ours(g) || g["name"] == format!("sfuctl-{name}") {
                left.push(format!("security group {} {}", g["id"], g["name"]));
            }
        }
        for k in inv["keys"].as_array().into_iter().flatten() {
            if ours(k) || k["name"] == format!("sfuctl-{name}") {
                left.push(format!("key pair {}", k["name"]));
            }
        }
        left
    }

    fn get(&self, path: &str) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| panic!("moto on port {}: {e}\n{}", self.port, self.log()));
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port).expect("write to moto");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read from moto");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(head.split_whitespace().nth(1).is_some_and(|s| s.starts_with('2')), "GET {path} on moto: {head}\n{body}");
        // Werkzeug may answer chunked; the control routes answer with a plain body.
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl crate::support::cloud_deployment::CloudEnv for Moto {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ACCESS_KEY_ID", self.access_key().to_string()), ("AWS_SECRET_ACCESS_KEY", self.secret_key().to_string()), ("AWS_ENDPOINT_URL", self.url())]
    }
}
