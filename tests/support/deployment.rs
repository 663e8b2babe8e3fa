//! A deployment under test: a spec for one namespace host and its own state directory. What `up` installs lands
//! in the host's own `/opt/sfuctl` ([`TestHost::opt_dir`]), removed with the host.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::support::cli::sfuctl;
use crate::support::netns::TestHost;

/// The shared secret of these deployments.
const SECRET: &str = "e2e-secret-0123456789abcdef0123456789abcdef";

/// A deployment of kind ssh onto one [`TestHost`].
pub struct Deployment {
    /// The deployment's name.
    pub name: String,
    opt: PathBuf,
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Deployment {
    /// A deployment named `<label>-<namespace>`, with `sfu` (the YAML body of the `sfu:` section, indented by
    /// two spaces) and `extra` top-level YAML.
    pub fn new(host: &TestHost, label: &str, sfu: &str, extra: &str) -> Self {
        let name = format!("{label}-{}", host.ns().trim_start_matches("sfut-"));
        let dep = Self { name, opt: host.opt_dir(), dir: tempfile::tempdir().unwrap(), home: tempfile::tempdir().unwrap() };
        dep.write_spec(host, &host.client_key(), sfu, extra);
        dep
    }

    /// Rewrites the spec (to change it between runs), logging in with `key`.
    pub fn write_spec(&self, host: &TestHost, key: &Path, sfu: &str, extra: &str) {
        let spec = format!(
            "name: {name}\nprovider:\n  kind: ssh\n  hosts:\n    - {{ name: media-1, address: {addr} }}\nssh:\n  user: root\n  private_key: {key}\n  allow_from: [{gw}/32]\nsfu:\n{sfu}{extra}",
            name = self.name,
            addr = host.address(),
            key = key.display(),
            gw = host.gateway_address(),
        );
        std::fs::write(self.spec(), spec).unwrap();
    }

    /// The spec file.
    pub fn spec(&self) -> PathBuf {
        self.dir.path().join("spec.yaml")
    }

    /// The deployment's directory on the host (`/opt/sfuctl/<name>` as the host sees it).
    pub fn root(&self) -> PathBuf {
        self.opt.join(&self.name)
    }

    /// `sfuctl ARGS… SPEC` with this deployment's state directory and secret.
    pub fn sfuctl(&self, args: &[&str]) -> Command {
        let mut cmd = sfuctl(self.home.path());
        cmd.env("SFUCTL_STATE_DIR", self.dir.path().join("state")).env("SFUCTL_SECRET", SECRET);
        cmd.args(args).arg(self.spec());
        cmd
    }

    /// The same command as [`Deployment::sfuctl`], to spawn and watch while it runs.
    pub fn process(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = crate::support::cli::sfuctl_process(self.home.path());
        cmd.env("SFUCTL_STATE_DIR", self.dir.path().join("state")).env("SFUCTL_SECRET", SECRET);
        cmd.args(args).arg(self.spec());
        cmd
    }
}


/// A directory artifact whose `bin/run.sh` stands in for a server (`exec sleep 600`): `command: ./bin/run.sh`.
pub fn sleeper_app() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let app = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(app.path().join("bin")).unwrap();
    std::fs::write(app.path().join("bin/run.sh"), "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(app.path().join("bin/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    app
}
