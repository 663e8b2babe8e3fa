//! The artifact: what the user uploads to `/opt/sfuctl/<name>/app/`, prepared so that an unchanged one is
//! recognised by its sha256 and never sent again.
//!
//! A directory is packed into a tar with sorted entries, zero timestamps and zero owners, so packing the same
//! tree twice gives the same bytes (and the same sha256). A `.tar`, `.tar.gz` or `.tgz` file is uploaded as it is
//! and unpacked on the host; any other file is placed in the app directory under its own name, executable.
//!
//! An npm app (a directory with `package-lock.json`) is packed without its top-level `node_modules`: dependencies
//! with native parts (mediasoup's worker) are installed on the host by `npm ci`, never copied from a laptop.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::error::UserError;

/// How the artifact lands on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A single file, placed as `app/<name>` with mode 0755.
    File {
        /// Its file name.
        name: String,
    },
    /// An archive unpacked into `app/` (`gzip`: whether it is compressed).
    Archive {
        /// Whether the archive is gzip-compressed.
        gzip: bool,
    },
}

/// An artifact ready to upload.
pub struct Artifact {
    /// The file to upload: the user's file, or the packed directory.
    pub upload: PathBuf,
    /// How it lands on the host.
    pub placement: Placement,
    /// The sha256 of the uploaded bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    // Keeps a packed directory's temporary file alive as long as the artifact.
    _packed: Option<tempfile::NamedTempFile>,
}

impl Artifact {
    /// Prepares the artifact at `path` (a file or directory).
    pub fn prepare(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| {
            UserError::input(format!("sfu.artifact `{}` cannot be read", path.display()))
                .caused_by(e)
                .hint("build the artifact first, or point `artifact` at an existing file or directory")
        })?;
        let (upload, placement, packed) = if meta.is_dir() {
            let packed = pack_directory(path)?;
            (packed.path().to_path_buf(), Placement::Archive { gzip: false }, Some(packed))
        } else {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let placement = if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                Placement::Archive { gzip: true }
            } else if name.ends_with(".tar") {
                Placement::Archive { gzip: false }
            } else {
                Placement::File { name }
            };
            (path.to_path_buf(), placement, None)
        };
        let (sha256, size) = sha256_file(&upload)?;
        Ok(Self { upload, placement, sha256, size, _packed: packed })
    }
}

/// The sha256 (hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = std::fs::File::open(path).map_err(|e| UserError::failed(format!("cannot read `{}`", path.display())).caused_by(e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| UserError::failed(format!("cannot read `{}`", path.display())).caused_by(e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pack_directory(dir: &Path) -> Result<tempfile::NamedTempFile> {
    let fail = |e: std::io::Error| UserError::failed(format!("cannot pack the artifact directory `{}`", dir.display())).caused_by(e);
    let out = tempfile::Builder::new().prefix("sfuctl-artifact-").suffix(".tar").tempfile().map_err(fail)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(out.reopen().map_err(fail)?));
    builder.follow_symlinks(false);
    let mut entries = Vec::new();
    collect(dir, dir, &mut entries).map_err(fail)?;
    if dir.join("package-lock.json").is_file() {
        entries.retain(|rel| !rel.starts_with("node_modules"));
    }
    entries.sort();
    for rel in entries {
        let full = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&full).map_err(fail)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
        if meta.is_dir() {
            builder.append_data(&mut header, &rel, std::io::empty()).map_err(fail)?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(fail)?;
            builder.append_link(&mut header, &rel, target).map_err(fail)?;
        } else {
            builder.append_data(&mut header, &rel, std::fs::File::open(&full).map_err(fail)?).map_err(fail)?;
        }
    }
    builder.into_inner().map_err(fail)?.into_inner().map_err(|e| fail(e.into_error()))?;
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path.strip_prefix(root).expect("below the root").to_path_buf();
        let is_dir = std::fs::symlink_metadata(&path)?.is_dir();
        out.push(rel);
        if is_dir {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_npm_app_is_packed_without_its_node_modules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{}").unwrap();
        std::fs::write(dir.path().join("server.js"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        std::fs::write(dir.path().join("node_modules/x/index.js"), "laptop build").unwrap();
        let packed = pack_directory(dir.path()).unwrap();
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(packed.path()).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["package-lock.json", "server.js"]);
    }

    #[test]
    fn packing_the_same_tree_twice_gives_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("server.js"), "console.log(1)\n").unwrap();
        std::fs::write(dir.path().join("lib/a.js"), "x\n").unwrap();
        let a = Artifact::prepare(dir.path()).unwrap();
        // Touch a file: its timestamp must not change the sha256.
        std::fs::write(dir.path().join("server.js"), "console.log(1)\n").unwrap();
        let b = Artifact::prepare(dir.path()).unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.placement, Placement::Archive { gzip: false });
        std::fs::write(dir.path().join("lib/a.js"), "y\n").unwrap();
        assert_ne!(Artifact::prepare(dir.path()).unwrap().sha256, a.sha256);
    }

    #[test]
    fn files_and_archives_are_placed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (name, want) in [
            ("turnserver", Placement::File { name: "turnserver".into() }),
            ("app.tar.gz", Placement::Archive { gzip: true }),
            ("app.tar", Placement::Archive { gzip: false }),
        ] {
            std::fs::write(dir.path().join(name), b"data").unwrap();
            let a = Artifact::prepare(&dir.path().join(name)).unwrap();
            assert_eq!(a.placement, want);
            assert_eq!(a.size, 4);
            assert_eq!(a.sha256, "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7");
        }
    }
}
