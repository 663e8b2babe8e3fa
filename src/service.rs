//! Running the server on a host: a systemd unit where the host runs systemd, otherwise sfuctl's fallback
//! supervisor (setsid, a pid file, a log file, restart on failure). Both give `up`, `status` and `down` the same
//! behaviour; this module writes the shell each of them runs over SSH.

use serde::Serialize;

use crate::remote::shell_quote as q;
use crate::render::Layout;

/// How the service is run on a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// A systemd unit, linked from `/opt/sfuctl/<name>/` into `/etc/systemd/system/`.
    Systemd,
    /// sfuctl's fallback supervisor (`supervise.sh`), for containers, minimal images and the test bed.
    Supervisor,
}

impl Manager {
    /// The name shown to users and kept in the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::Supervisor => "supervisor",
        }
    }
}

/// What sfuctl needs to know about a host before deploying to it, found with one command ([`PROBE_SCRIPT`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The login user.
    pub user: String,
    /// Whether commands run as root (directly, or through passwordless sudo).
    pub root: bool,
    /// Whether `sudo -n` is needed to be root.
    pub sudo: bool,
    /// systemd or the fallback supervisor.
    pub manager: Manager,
    /// Whether `nft` is installed.
    pub nft: bool,
}

/// Prints `key=value` lines that [`HostFacts::parse`] reads.
pub const PROBE_SCRIPT: &str = "\
echo user=$(id -un)
if [ \"$(id -u)\" = 0 ]; then echo root=yes; elif sudo -n true 2>/dev/null; then echo root=sudo; else echo root=no; fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo manager=systemd; else echo manager=supervisor; fi
if command -v nft >/dev/null 2>&1 || sudo -n sh -c 'command -v nft' >/dev/null 2>&1; then echo nft=yes; else echo nft=no; fi
";

impl HostFacts {
    /// Reads the output of [`PROBE_SCRIPT`].
    pub fn parse(output: &str) -> Self {
        let get = |key: &str| output.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or("").trim().to_string();
        let root = get("root");
        Self {
            user: get("user"),
            root: root == "yes" || root == "sudo",
            sudo: root == "sudo",
            manager: if get("manager") == "systemd" { Manager::Systemd } else { Manager::Supervisor },
            nft: get("nft") == "yes",
        }
    }

    /// Wraps a script so it runs as root: as it is for root, through `sudo -n` otherwise.
    pub fn as_root(&self, script: &str) -> String {
        if self.sudo { format!("sudo -n sh -c {}", q(script)) } else { format!("sh -c {}", q(script)) }
    }
}

/// The shell that `up`, `status` and `down` run for one deployment's service.
pub struct ServiceScripts<'a> {
    /// systemd or the supervisor.
    pub manager: Manager,
    /// The service's name, `sfuctl-<name>`.
    pub name: &'a str,
    /// Where the deployment's files live.
    pub layout: &'a Layout,
    /// The user the service runs as.
    pub run_as: &'a str,
}

impl ServiceScripts<'_> {
    /// Installs the service (enables the unit) and starts it: restarted when `restart`, otherwise only started
    /// when it is not running.
    pub fn install_and_start(&self, restart: bool) -> String {
        let l = self.layout;
        match self.manager {
            Manager::Systemd => {
                let unit = format!("/etc/systemd/system/{}.service", self.name);
                let start = if restart { format!("systemctl restart {}", self.name) } else { format!("systemctl is-active --quiet {n} || systemctl start {n}", n = self.name) };
                format!(
                    "set -e\nln -sf {unit_src} {unit}\nsystemctl daemon-reload\nsystemctl enable {n} >/dev/null 2>&1\n{start}\n",
                    unit_src = q(&l.unit),
                    unit = q(&unit),
                    n = self.name,
                )
            }
            Manager::Supervisor => {
                let stop = if restart { self.stop_supervisor() } else { String::new() };
                // setpriv execs (unlike su or runuser), so the pid file holds the supervisor itself.
                let as_user = if self.run_as == "root" { String::new() } else { format!("setpriv --reuid={u} --regid={u} --init-groups ", u = q(self.run_as)) };
                format!(
                    "set -e\n{stop}if ! {running}; then\n  cd {root}\n  setsid {as_user}{sup} >> {log} 2>&1 < /dev/null &\n  echo $! > {pid}\nfi\n",
                    running = self.supervisor_running(),
                    root = q(&l.root),
                    sup = q(&l.supervisor),
                    log = q(&l.log),
                    pid = q(&l.pid),
                )
            }
        }
    }

    /// A shell condition: the supervisor's pid is alive (and not a zombie).
    fn supervisor_running(&self) -> String {
        format!(
            "{{ [ -f {pid} ] && p=$(cat {pid}) && [ -n \"$p\" ] && [ -r /proc/$p/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$p/stat; }}",
            pid = q(&self.layout.pid)
        )
    }

    /// Stops the supervisor and its whole process group, waiting up to 10 s before SIGKILL.
    fn stop_supervisor(&self) -> String {
        format!(
            "if {running}; then\n  kill -TERM -\"$p\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null || true\n  i=0\n  while {running} && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n  if {running}; then kill -KILL -\"$p\" 2>/dev/null || true; fi\nfi\nrm -f {pid} {child} {exits}\n",
            running = self.supervisor_running(),
            pid = q(&self.layout.pid),
            child = q(&self.layout.child_pid),
            exits = q(&self.layout.supervisor_state),
        )
    }

    /// Prints `state=`, `since=` (Unix seconds) and `pid=` lines about the service, `deployed=no` when the
    /// deployment's directory is gone, and how often it restarted and how it last ended: `restarts=` and
    /// `last_exit=` (a shell status) from the supervisor, `systemd.NRestarts=`, `systemd.ExecMainCode=`,
    /// `systemd.ExecMainStatus=`, `systemd.Result=` … from systemd.
    pub fn status(&self) -> String {
        let deployed = format!("[ -d {} ] || echo deployed=no\n", q(&self.layout.root));
        match self.manager {
            Manager::Systemd => format!(
                "{deployed}s=$(systemctl show -p ActiveState --value {n} 2>/dev/null)\necho state=${{s:-inactive}}\nt=$(systemctl show -p ActiveEnterTimestamp --value {n} 2>/dev/null)\n[ -n \"$t\" ] && echo since=$(date -d \"$t\" +%s 2>/dev/null)\necho pid=$(systemctl show -p MainPID --value {n} 2>/dev/null)\nsystemctl show -p SubState -p NRestarts -p ExecMainCode -p ExecMainStatus -p Result {n} 2>/dev/null | sed 's/^/systemd./'\n",
                n = self.name
            ),
            Manager::Supervisor => format!(
                "{deployed}if {running}; then\n  c=$(cat {child} 2>/dev/null)\n  if [ -n \"$c\" ] && [ -r /proc/$c/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$c/stat; then echo state=active; echo pid=$c; echo since=$(stat -c %Y {child}); else echo state=activating; fi\nelse\n  echo state=inactive\nfi\ncat {exits} 2>/dev/null || true\n",
                running = self.supervisor_running(),
                child = q(&self.layout.child_pid),
                exits = q(&self.layout.supervisor_state),
            ),
        }
    }

    /// The last lines of the service's log.
    pub fn logs(&self, lines: usize) -> String {
        match self.manager {
            Manager::Systemd => format!("journalctl -u {} -n {lines} --no-pager 2>&1", self.name),
            Manager::Supervisor => format!("tail -n {lines} {} 2>&1", q(&self.layout.log)),
        }
    }

    /// The follow-up of [`ServiceScripts::logs`]: the last `lines` lines, then every new one until interrupted.
    pub fn follow_logs(&self, lines: usize) -> String {
        match self.manager {
            Manager::Systemd => format!("journalctl -u {} -n {lines} -f --no-pager", self.name),
            Manager::Supervisor => format!("tail -n {lines} -F {}", q(&self.layout.log)),
        }
    }

    /// Where the service's log is, as a person on the host would read it: `journalctl -u <unit>` or the
    /// supervisor's log file.
    pub fn log_location(&self) -> String {
        match self.manager {
            Manager::Systemd => format!("`journalctl -u {}`", self.name),
            Manager::Supervisor => format!("the log file {}", self.layout.log),
        }
    }

    /// Stops the service and removes what installed it (the unit link); files are removed by the caller.
    pub fn stop_and_remove(&self) -> String {
        match self.manager {
            Manager::Systemd => format!(
                "if [ -e /etc/systemd/system/{n}.service ] || systemctl cat {n} >/dev/null 2>&1; then\n  systemctl disable --now {n} >/dev/null 2>&1 || true\n  rm -f /etc/systemd/system/{n}.service\n  systemctl daemon-reload\nfi\n",
                n = self.name
            ),
            Manager::Supervisor => self.stop_supervisor(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_parse() {
        let f = HostFacts::parse("user=ubuntu\nroot=sudo\nmanager=systemd\nnft=yes\n");
        assert_eq!(f, HostFacts { user: "ubuntu".into(), root: true, sudo: true, manager: Manager::Systemd, nft: true });
        assert_eq!(f.as_root("echo hi"), "sudo -n sh -c 'echo hi'");
        let g = HostFacts::parse("user=root\nroot=yes\nmanager=supervisor\nnft=no\n");
        assert!(g.root && !g.sudo && g.manager == Manager::Supervisor && !g.nft);
    }

    #[test]
    fn every_script_is_valid_shell() {
        let spec = crate::spec::Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: coturn, rtc_ports: 40000-41000 }\n").unwrap();
        let layout = Layout::of(&spec);
        for manager in [Manager::Systemd, Manager::Supervisor] {
            for run_as in ["root", "sfuctl"] {
                let s = ServiceScripts { manager, name: "sfuctl-t", layout: &layout, run_as };
                for script in [s.install_and_start(true), s.install_and_start(false), s.status(), s.logs(5), s.follow_logs(5), s.stop_and_remove()] {
                    let out = std::process::Command::new("sh").arg("-n").arg("-c").arg(&script).output().unwrap();
                    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
    }
}
