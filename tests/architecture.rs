//! The import rules of docs/architecture.md, checked on the source: no module imports another that imports it
//! back (directly or around a loop), and the leaves stay leaves. Test modules are left out: tests may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::cli::repo;

/// Top-level module -> the top-level modules its non-test code names as `crate::<module>`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = repo().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().replace(".rs", "");
        let top = rel.split('/').next().unwrap().to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let deps = out.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") && !path.ends_with("fake.rs") {
            out.push(path);
        }
    }
}

/// Whether `to` can be reached from `from` by following imports.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(m) = stack.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if d == to {
                return true;
            }
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    false
}

#[test]
fn no_module_imports_itself_around_a_loop() {
    let graph = imports();
    let loops: Vec<String> = graph.iter().filter(|(m, _)| reaches(&graph, m, m)).map(|(m, d)| format!("{m} -> {d:?}")).collect();
    assert!(loops.is_empty(), "import loops (see docs/architecture.md, \"Import direction\"):\n{}", loops.join("\n"));
}

#[test]
fn the_leaves_stay_leaves() {
    let graph = imports();
    let only = |module: &str, allowed: &[&str]| {
        let extra: Vec<&String> = graph[module].iter().filter(|d| !allowed.contains(&d.as_str())).collect();
        assert!(extra.is_empty(), "{module} must import only {allowed:?}, but imports {extra:?}");
    };
    only("spec", &["error", "locate", "port_range"]);
    only("http", &["error", "secret", "log"]);
    only("log", &[]);
    only("owner", &[]);
    only("port_range", &[]);
    for (module, deps) in &graph {
        if module != "cli" {
            assert!(!deps.contains("commands") && !deps.contains("cli"), "{module} imports the command line: {deps:?}");
        }
    }
    assert!(!reaches(&graph, "provider", "engine"), "providers translate; they never call the engine");
}
