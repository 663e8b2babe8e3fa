//! What a fresh host needs before its server can start, as idempotent shell run as root over SSH: the
//! distribution's packages (with the distribution's own unit masked first, so a package never starts a server
//! with its stock config on the port sfuctl opens), a Node.js runtime from the official release tarballs checked
//! against the release's SHASUMS256.txt, and the app's npm dependencies when its lock file changed.
//!
//! Each script prints `key=value` lines that [`Installed::parse`] reads, so `up` can say what it installed and a
//! converged run can prove it installed nothing.

use serde::Serialize;

use crate::kind::Deps;
use crate::remote::shell_quote as q;
use crate::spec::Spec;

/// The default Node.js mirror, as nvm and node-gyp spell it (`NODEJS_ORG_MIRROR` overrides it).
pub const NODE_MIRROR: &str = "https://nodejs.org/dist";

/// The environment variable that overrides [`NODE_MIRROR`], read where sfuctl runs and used on the host.
pub const NODE_MIRROR_ENV: &str = "NODEJS_ORG_MIRROR";

/// Distribution packages for a host, and the distribution units that must never run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packages {
    /// Debian/Ubuntu package names.
    pub names: Vec<String>,
    /// Units the packages bring that would take sfuctl's ports (`coturn.service`): masked before installing.
    pub mask_units: Vec<String>,
}

/// A Node.js runtime of one major version, installed under `dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRuntime {
    /// The major version (`22`).
    pub major: u32,
    /// Where it goes on the host (`/opt/sfuctl/<name>/node`); its `bin/` joins the service's PATH.
    pub dir: String,
    /// The mirror in the nodejs.org/dist layout.
    pub mirror: String,
}

impl NodeRuntime {
    /// The mirror from `NODEJS_ORG_MIRROR` where sfuctl runs, else nodejs.org.
    pub fn mirror_from_env() -> String {
        std::env::var(NODE_MIRROR_ENV).ok().map(|m| m.trim().trim_end_matches('/').to_string()).filter(|m| !m.is_empty()).unwrap_or_else(|| NODE_MIRROR.into())
    }
}

/// Everything a spec's hosts need installed, from the kind's descriptor and the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallPlan {
    /// Distribution packages: the kind's when the spec gives no artifact, plus `sfu.packages`.
    pub packages: Packages,
    /// The Node.js runtime, for kinds that run on it.
    pub node: Option<NodeRuntime>,
    /// Whether `npm ci` installs the app's dependencies.
    pub npm: bool,
}

impl InstallPlan {
    /// The plan for a spec; `node_dir` is where the runtime goes on the host.
    pub fn for_spec(spec: &Spec, node_dir: &str) -> Self {
        let install = &spec.sfu.kind.descriptor().install;
        let from_distribution = spec.sfu.artifact.is_none();
        let mut names: Vec<String> = if from_distribution { install.packages.clone() } else { Vec::new() };
        names.extend(spec.sfu.packages.iter().cloned());
        let mask_units = if from_distribution { install.mask_units.clone() } else { Vec::new() };
        Self {
            packages: Packages { names, mask_units },
            node: install.node.map(|default| NodeRuntime { major: spec.sfu.node_version.unwrap_or(default), dir: node_dir.to_string(), mirror: NodeRuntime::mirror_from_env() }),
            npm: install.deps == Some(Deps::Npm),
        }
    }

    /// The directory to put in front of PATH for the service (the runtime's `bin`), if any.
    pub fn path_prefix(&self) -> Option<String> {
        self.node.as_ref().map(|n| format!("{}/bin", n.dir))
    }
}

/// The program a start command runs, when it can be told from the command: its first word (after `exec` and
/// variable assignments); `None` for anything a shell would have to work out (quotes, `$`, pipes).
pub fn program_of(command: &str) -> Option<String> {
    let mut words = command.split_whitespace().skip_while(|w| *w == "exec" || (w.contains('=') && !w.starts_with('=')));
    let first = words.next()?;
    let plain = first.bytes().all(|b| b.is_ascii_alphanumeric() || b"./_+-".contains(&b));
    plain.then(|| first.to_string())
}

/// Checks, in the app directory and with the service's PATH (`path_prefix` in front), that `program` can run;
/// prints `missing=<program>` when it cannot.
pub fn program_check_script(program: &str, app: &str, path_prefix: Option<&str>) -> String {
    let path = path_prefix.map(|p| format!("PATH={}:$PATH; ", q(p))).unwrap_or_default();
    format!("( cd {app} 2>/dev/null; {path}command -v {p} >/dev/null 2>&1 ) || echo missing={p}\n", app = q(app), p = q(program))
}

/// Masks `units`, then installs whichever of `names` is missing. Prints `installed=<names>` when it installed
/// something, `masked=<unit>` for each unit it masked now.
pub fn packages_script(p: &Packages) -> String {
    let names: Vec<String> = p.names.iter().map(|n| q(n)).collect();
    let units: Vec<String> = p.mask_units.iter().map(|u| q(u)).collect();
    format!(
        r#"set -e
if [ -d /run/systemd/system ]; then
  for u in {units}; do
    if [ "$(systemctl is-enabled "$u" 2>/dev/null)" != masked ]; then
      systemctl stop "$u" >/dev/null 2>&1 || true
      systemctl mask "$u" >/dev/null 2>&1 && echo "masked=$u" || true
    fi
  done
fi
missing=""
for p in {names}; do
  [ "$(dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null)" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 || {{ echo "sfuctl: this host has no apt-get to install$missing" >&2; exit 3; }}
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null 2>&1 || apt-get update -q
  apt-get install -y -q --no-install-recommends $missing >/dev/null
  echo "installed=$(echo $missing)"
fi
"#,
        units = units.join(" "),
        names = names.join(" "),
    )
}

/// Installs Node.js `major` into `dir` unless it is there: finds the newest release of that major in the mirror's
/// `latest-v<major>.x/SHASUMS256.txt`, downloads its linux tarball for this machine, checks its sha256 against
/// that file, and unpacks it in place atomically. Prints `node=<version>` when it installed one.
pub fn node_script(n: &NodeRuntime) -> String {
    format!(
        r#"set -e
dir={dir}; major={major}; mirror={mirror}
if [ -x "$dir/bin/node" ] && "$dir/bin/node" --version 2>/dev/null | grep -q "^v$major\."; then exit 0; fi
case "$(uname -m)" in x86_64) arch=x64 ;; aarch64|arm64) arch=arm64 ;; *) echo "sfuctl: no Node.js build for $(uname -m)" >&2; exit 3 ;; esac
fetch() {{
  if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then wget -q -O "$2" "$1"
  else python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; fi
}}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fetch "$mirror/latest-v$major.x/SHASUMS256.txt" "$tmp/SHASUMS256.txt" || {{ echo "sfuctl: cannot fetch $mirror/latest-v$major.x/SHASUMS256.txt" >&2; exit 4; }}
file=$(grep -o "node-v$major\.[0-9]*\.[0-9]*-linux-$arch\.tar\.gz" "$tmp/SHASUMS256.txt" | head -n 1)
[ -n "$file" ] || {{ echo "sfuctl: $mirror has no linux-$arch tarball for Node.js $major" >&2; exit 4; }}
fetch "$mirror/latest-v$major.x/$file" "$tmp/$file" || {{ echo "sfuctl: cannot fetch $mirror/latest-v$major.x/$file" >&2; exit 4; }}
(cd "$tmp" && grep "  $file\$" SHASUMS256.txt | sha256sum -c --status -) || {{ echo "sfuctl: $file does not match its SHASUMS256.txt entry: not installed" >&2; exit 5; }}
rm -rf "$dir.new"; mkdir -p "$dir.new"
tar -xzf "$tmp/$file" -C "$dir.new" --strip-components=1 --no-same-owner
rm -rf "$dir"; mv "$dir.new" "$dir"
echo "node=$("$dir/bin/node" --version)"
"#,
        dir = q(&n.dir),
        major = n.major,
        mirror = q(&n.mirror),
    )
}

/// Runs `npm ci --omit=dev` in `app` (as the login user, with the service's environment files, so
/// `npm_config_registry` or `MEDIASOUP_WORKER_BIN` from `sfu.env` apply) when `package-lock.json` differs from
/// the one last installed, or `node_modules` is missing. Prints `npm=installed` when it ran.
pub fn npm_script(app: &str, node_bin: &str, env_files: &[String], marker: &str) -> String {
    let sources: Vec<String> = env_files.iter().map(|f| format!("[ -r {f} ] && . {f}", f = q(f))).collect();
    format!(
        r#"set -e
cd {app}
[ -f package-lock.json ] || exit 0
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -d node_modules ] && [ "$(cat {marker} 2>/dev/null)" = "$want" ]; then exit 0; fi
set -a
{sources}
set +a
export PATH={node_bin}:$PATH
npm ci --omit=dev --no-audit --no-fund --loglevel=error >{log} 2>&1 || {{ tail -n 30 {log} >&2; exit 6; }}
echo "$want" > {marker}
echo npm=installed
"#,
        app = q(app),
        marker = q(marker),
        sources = sources.join("\n"),
        node_bin = q(node_bin),
        log = q(&format!("{marker}.log")),
    )
}

/// What the install scripts did on one host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Installed {
    /// Packages installed now.
    pub packages: Vec<String>,
    /// Units masked now.
    pub masked: Vec<String>,
    /// The Node.js version installed now.
    pub node: Option<String>,
    /// Whether `npm ci` ran.
    pub npm: bool,
}

impl Installed {
    /// Reads the scripts' `key=value` lines.
    pub fn parse(out: &str) -> Self {
        let mut me = Self::default();
        for line in out.lines() {
            if let Some(v) = line.strip_prefix("installed=") {
                me.packages.extend(v.split_whitespace().map(str::to_string));
            } else if let Some(v) = line.strip_prefix("masked=") {
                me.masked.push(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("node=") {
                me.node = Some(v.trim().to_string());
            } else if line.trim() == "npm=installed" {
                me.npm = true;
            }
        }
        me
    }

    /// Whether anything was installed.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// One line for `up`'s report: `coturn installed, coturn.service masked`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.packages.is_empty() {
            parts.push(format!("{} installed", self.packages.join(", ")));
        }
        if !self.masked.is_empty() {
            parts.push(format!("{} masked", self.masked.join(", ")));
        }
        if let Some(v) = &self.node {
            parts.push(format!("Node.js {v} installed"));
        }
        if self.npm {
            parts.push("npm ci ran".into());
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_of_a_start_command() {
        assert_eq!(program_of("turnserver -c /x").as_deref(), Some("turnserver"));
        assert_eq!(program_of("exec FOO=1 ./livekit-server --config x").as_deref(), Some("./livekit-server"));
        assert_eq!(program_of("npm start").as_deref(), Some("npm"));
        assert_eq!(program_of("\"$HOME/x\" run"), None);
        let out = std::process::Command::new("sh").args(["-c", &program_check_script("no-such-program-here", "/", None)]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "missing=no-such-program-here\n");
        let out = std::process::Command::new("sh").args(["-c", &program_check_script("sh", "/", Some("/nonexistent"))]).output().unwrap();
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn reads_what_was_installed() {
        let got = Installed::parse("masked=coturn.service\ninstalled=coturn\nnode=v22.23.5\nnpm=installed\n");
        assert_eq!(got.packages, ["coturn"]);
        assert_eq!(got.summary(), "coturn installed, coturn.service masked, Node.js v22.23.5 installed, npm ci ran");
        assert!(Installed::parse("").is_empty());
    }

    #[test]
    fn scripts_are_valid_shell() {
        let scripts = [
            packages_script(&Packages { names: vec!["coturn".into()], mask_units: vec!["coturn.service".into()] }),
            node_script(&NodeRuntime { major: 22, dir: "/opt/sfuctl/x/node".into(), mirror: "http://10.200.252.1:18001".into() }),
            npm_script("/opt/sfuctl/x/app", "/opt/sfuctl/x/node/bin", &["/opt/sfuctl/x/sfuctl.env".into()], "/opt/sfuctl/x/.npm-lock.sha256"),
        ];
        for s in scripts {
            let out = std::process::Command::new("sh").args(["-n", "-c", &s]).output().unwrap();
            assert!(out.status.success(), "{}\n{s}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn node_installs_from_a_mirror_verified_against_its_shasums_and_only_once() {
        // A mirror of our own on loopback with a tiny "release": the real download-and-verify path runs.
        let mirror = tempfile::tempdir().unwrap();
        let rel = mirror.path().join("latest-v22.x");
        std::fs::create_dir_all(&rel).unwrap();
        let arch = if cfg!(target_arch = "aarch64") { "arm64" } else { "x64" };
        let name = format!("node-v22.1.2-linux-{arch}");
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join(&name).join("bin")).unwrap();
        std::fs::write(tree.path().join(&name).join("bin/node"), "#!/bin/sh\necho v22.1.2\n").unwrap();
        std::process::Command::new("chmod").arg("+x").arg(tree.path().join(&name).join("bin/node")).status().unwrap();
        let file = format!("{name}.tar.gz");
        assert!(std::process::Command::new("tar").arg("-czf").arg(rel.join(&file)).arg("-C").arg(tree.path()).arg(&name).status().unwrap().success());
        let sum = crate::artifact::sha256_file(&rel.join(&file)).unwrap().0;
        std::fs::write(rel.join("SHASUMS256.txt"), format!("{sum}  {file}\n0000  node-v22.1.2.tar.gz\n")).unwrap();
        let server = tiny_http_server(mirror.path().to_path_buf());
        let target = tempfile::tempdir().unwrap();
        let runtime = NodeRuntime { major: 22, dir: target.path().join("node").display().to_string(), mirror: format!("http://{}", server) };
        let run = |script: &str| std::process::Command::new("sh").args(["-c", script]).output().unwrap();
        let out = run(&node_script(&runtime));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(Installed::parse(&String::from_utf8_lossy(&out.stdout)).node.as_deref(), Some("v22.1.2"));
        let again = run(&node_script(&runtime));
        assert!(again.status.success() && again.stdout.is_empty(), "a second run installs nothing");

        // A tarball that does not match its SHASUMS256 line is refused, and nothing is installed.
        std::fs::write(rel.join("SHASUMS256.txt"), format!("{}  {file}\n", "0".repeat(64))).unwrap();
        let other = NodeRuntime { dir: target.path().join("node2").display().to_string(), ..runtime };
        let out = run(&node_script(&other));
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not match"), "{out:?}");
        assert!(!target.path().join("node2").exists());
    }

    /// A static file server on 127.0.0.1 for the mirror test (a thread; it ends with the test process).
    fn tiny_http_server(root: std::path::PathBuf) -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                use std::io::{BufRead, Write};
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                match std::fs::read(root.join(&path)) {
                    Ok(body) => {
                        let _ = write!(stream, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        let _ = stream.write_all(&body);
                    }
                    Err(_) => {
                        let _ = write!(stream, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    }
                }
            }
        });
        addr
    }
}
