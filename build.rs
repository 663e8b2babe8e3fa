//! Embeds `templates/` in the binary: every `*.j2` template and every server-kind descriptor
//! (`templates/<kind>/kind.yaml`). A new kind's folder is picked up without editing a list in the code.
//!
//! It writes two Rust expressions into `$OUT_DIR`, each a sorted `&[(&str, &str)]` of `include_str!`s:
//! `templates.rs` (template name like `janus/janus.jcfg.j2`, source) and `kinds.rs` (kind name, descriptor).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("templates");
    // A directory here makes cargo rerun the script when anything below it changes (a new kind, a new template).
    println!("cargo::rerun-if-changed=templates");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut templates = String::from("&[\n");
    let mut kinds = String::from("&[\n");
    for path in &files {
        let name = path.strip_prefix(&root).expect("found under templates/").to_str().expect("template paths are UTF-8").replace('\\', "/");
        let include = format!("include_str!({:?})", path.to_str().expect("template paths are UTF-8"));
        if name.ends_with(".j2") {
            writeln!(templates, "    ({name:?}, {include}),").expect("writing to a String");
        } else if let Some(kind) = name.strip_suffix("/kind.yaml").filter(|k| !k.contains('/')) {
            writeln!(kinds, "    ({kind:?}, {include}),").expect("writing to a String");
        }
    }
    templates.push(']');
    kinds.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("templates.rs"), templates).expect("OUT_DIR is writable");
    std::fs::write(out.join("kinds.rs"), kinds).expect("OUT_DIR is writable");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}
