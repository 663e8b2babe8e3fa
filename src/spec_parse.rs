//! Reading a spec's text with every structural problem at once: YAML syntax, unknown fields, wrong types and
//! missing fields.
//!
//! serde stops at the first problem. To find the next one, the text is read into a YAML value, and after each
//! problem the value is mended: an unknown field or a value of the wrong type is taken out, a missing required
//! field gets a placeholder, and the spec is read again (bounded). The spec that finally reads is handed on for
//! semantic validation together with what was mended: the fields taken out and the sections that got a
//! placeholder, whose findings would only repeat the problem or judge a value the user did not write. Positions
//! come from the parser for the first problem and from `locate` for the others, in the user's own text.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use crate::locate::{self, Location};
use crate::spec::{Diagnostic, Spec, closest, diagnose_parse_error};

/// At most this many problems are collected from one spec (each costs one more read of a small document).
const MAX_PROBLEMS: usize = 64;

/// What reading a spec's text gave.
#[derive(Debug)]
pub struct Parsed {
    /// The spec as written, less the parts reported in `errors` (placeholders standing in for missing required
    /// fields); `None` when the text could not be read as a spec at all.
    pub spec: Option<Spec>,
    /// Every structural problem found, in the order serde met them.
    pub errors: Vec<Diagnostic>,
    /// Fields whose value was taken out because of a type error, fields an unknown field was probably meant to be
    /// (`allow_from` for `alow_from`), and sections holding a placeholder (dotted paths, as in
    /// [`Diagnostic::field`]): findings within them, or about their section as a whole, are not the user's.
    pub dropped: Vec<String>,
}

/// One step of a path into the YAML value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    if path.is_empty() || path == "." {
        return out;
    }
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn show_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The node at `path`, when it exists.
fn node_mut<'a>(root: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut node = root;
    for seg in path {
        node = match (seg, node) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str())?,
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
            (seg, Value::Tagged(t)) => node_mut(&mut t.value, std::slice::from_ref(seg))?,
            _ => return None,
        };
    }
    Some(node)
}

/// Takes out the node at `path`; `false` when there is none.
fn remove(root: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else { return false };
    match (last, node_mut(root, parent)) {
        (Seg::Key(k), Some(Value::Mapping(m))) => m.remove(k.as_str()).is_some(),
        (Seg::Index(i), Some(Value::Sequence(s))) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    }
}

/// A value that satisfies a required field, so the rest of the spec can still be read. Only the required fields
/// of the spec's sections are known; for anything else reading stops.
fn placeholder(parent: &[Seg], field: &str) -> Option<Value> {
    let section = parent.iter().rev().find_map(|s| match s {
        Seg::Key(k) => Some(k.as_str()),
        Seg::Index(_) => None,
    });
    let text = match (section, field) {
        (None, "provider" | "sfu") => return Some(Value::Mapping(Mapping::new())),
        (None | Some("hosts"), "name") => "placeholder",
        (Some("hosts"), "address") => "192.0.2.1",
        (Some("provider"), "kind") => "ssh",
        (Some("sfu"), "kind") => "custom",
        (Some("sfu"), "rtc_ports") => "40000-41000",
        _ => return None,
    };
    Some(Value::String(text.to_string()))
}

/// Maps paths in the mended value back to the user's text: removed sequence items shift later indices.
#[derive(Default)]
struct Removed {
    /// Per sequence (its original path), the original indices taken out.
    items: BTreeMap<String, Vec<usize>>,
}

impl Removed {
    fn original(&self, path: &[Seg]) -> Vec<Seg> {
        let mut out: Vec<Seg> = Vec::new();
        for seg in path {
            match seg {
                Seg::Index(i) => {
                    let mut index = *i;
                    if let Some(gone) = self.items.get(&show_path(&out)) {
                        for &g in gone {
                            if g <= index {
                                index += 1;
                            }
                        }
                    }
                    out.push(Seg::Index(index));
                }
                key => out.push(key.clone()),
            }
        }
        out
    }

    fn note(&mut self, original: &[Seg]) {
        if let Some((Seg::Index(i), parent)) = original.split_last() {
            let list = self.items.entry(show_path(parent)).or_default();
            list.push(*i);
            list.sort_unstable();
        }
    }
}

/// The path serde_yaml puts before its message (`sfu.tcp_ports[0]: invalid type…`), and the message.
fn split_error(err: &serde_yaml::Error) -> (String, String) {
    let text = err.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::new(), text),
    }
}

/// Reads a spec's text, collecting every structural problem (see the module's comment).
pub fn parse_all(source: &str) -> Parsed {
    let mut value: Value = match serde_yaml::from_str(source) {
        Ok(v) => v,
        Err(e) => return Parsed { spec: None, errors: vec![syntax_error(source, &e)], dropped: Vec::new() },
    };
    if !matches!(value, Value::Mapping(_)) {
        let what = match &value {
            Value::Null => "empty",
            Value::Sequence(_) => "a list",
            _ => "a single value",
        };
        return Parsed {
            spec: None,
            errors: vec![Diagnostic {
                field: String::new(),
                location: Some(Location { line: 1, column: 1 }),
                message: format!("the spec is {what}, not a mapping of fields"),
                hint: Some("a spec needs at least `name`, `provider` and `sfu`: see `examples/` or README's \"Spec reference\"".into()),
            }],
            dropped: Vec::new(),
        };
    }
    // YAML merge keys (`<<: *defaults`) are resolved on the value; the spec's own text cannot be read directly then.
    let merges = source.contains("<<");
    if merges && value.apply_merge().is_err() {
        return Parsed {
            spec: None,
            errors: vec![Diagnostic {
                field: String::new(),
                location: locate::find_key(source, "<<"),
                message: "a merge key (`<<`) must name a mapping or a list of mappings".into(),
                hint: Some("write `<<: *name` where `&name` marks a mapping".into()),
            }],
            dropped: Vec::new(),
        };
    }
    let mut errors = Vec::new();
    let mut dropped = Vec::new();
    let mut removed = Removed::default();
    // Required fields that were taken out or filled in by us: their "missing field" is not news.
    let mut mended: Vec<Vec<Seg>> = Vec::new();
    let mut suggested: Vec<(Vec<Seg>, String)> = Vec::new();
    for round in 0..MAX_PROBLEMS {
        // The first round reads the user's own text, so the parser's position of the first problem is exact; later
        // rounds read the mended value written back as YAML, whose positions mean nothing in the user's file.
        let (result, from_source) = if round == 0 && !merges {
            (serde_yaml::from_str::<Spec>(source), true)
        } else {
            match serde_yaml::to_string(&value) {
                Ok(text) => (serde_yaml::from_str::<Spec>(&text), false),
                // A value YAML cannot write back (an odd tag): read the user's text as it is, once.
                Err(_) if round == 0 => (serde_yaml::from_str::<Spec>(source), true),
                Err(_) => break,
            }
        };
        let err = match result {
            Ok(spec) => {
                return Parsed { spec: Some(spec), errors: placed(errors), dropped };
            }
            Err(e) => e,
        };
        let (path, message) = split_error(&err);
        let here = parse_path(&path);
        let original = removed.original(&here);
        let mut d = diagnose_parse_error(source, &err);
        if !from_source {
            d.location = None;
        }
        if let Some(bad) = unknown_field(&message) {
            let mut full = original.clone();
            full.push(Seg::Key(bad.clone()));
            d.field = show_path(&full);
            if !from_source {
                d.location = locate::find(source, &d.field);
            }
            if let Some(best) = expected_names(&message).as_deref().and_then(|names| closest(&bad, names).map(str::to_string)) {
                // The field the user most likely meant: findings about its default are not the user's either.
                let mut meant = original.clone();
                meant.push(Seg::Key(best.clone()));
                dropped.push(show_path(&meant));
                suggested.push((original.clone(), best));
            }
            errors.push(d);
            let mut target = here.clone();
            target.push(Seg::Key(bad));
            if !remove(&mut value, &target) {
                break;
            }
            continue;
        }
        if let Some(missing) = message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            let mut full = original.clone();
            full.push(Seg::Key(missing.to_string()));
            let inside_mended = mended.iter().any(|m| full.starts_with(m));
            let was_suggested = suggested.iter().any(|(p, best)| *p == original && best == missing);
            if !inside_mended && !was_suggested {
                // The field is the missing one; its place is the section that lacks it.
                d.field = show_path(&full);
                d.location = if original.is_empty() { None } else { locate::find(source, &show_path(&original)) };
                errors.push(d);
            }
            let Some(fill) = placeholder(&here, missing) else { break };
            let Some(Value::Mapping(m)) = node_mut(&mut value, &here) else { break };
            m.insert(Value::String(missing.to_string()), fill);
            // Every finding in the section with the placeholder would judge our value, not the user's.
            dropped.push(show_path(if original.is_empty() { &full } else { &original }));
            mended.push(full);
            continue;
        }
        // A value of the wrong type (or an unknown variant, a bad range): report it and take it out.
        if here.is_empty() {
            errors.push(d);
            break;
        }
        d.field = show_path(&original);
        if !from_source {
            d.location = locate::find(source, &d.field);
        }
        if d.hint.is_none() {
            d.hint = type_hint(&d.field, &message);
        }
        errors.push(d);
        if !remove(&mut value, &here) {
            break;
        }
        removed.note(&original);
        dropped.push(show_path(&original));
        mended.push(original);
    }
    if errors.is_empty() {
        // Reading stopped before naming anything: the strict parser's first problem is still worth saying.
        match Spec::parse(source) {
            Ok(spec) => return Parsed { spec: Some(spec), errors, dropped },
            Err(d) => errors.push(d),
        }
    }
    Parsed { spec: None, errors: placed(errors), dropped }
}

/// Every problem names a field or a place: one with neither is about the whole file, placed at its start.
fn placed(mut errors: Vec<Diagnostic>) -> Vec<Diagnostic> {
    for d in &mut errors {
        if d.field.is_empty() && d.location.is_none() {
            d.location = Some(Location { line: 1, column: 1 });
        }
    }
    errors
}

/// A YAML syntax error, with a hint for the commonest cause the parser words obscurely: a tab in the indentation.
fn syntax_error(source: &str, err: &serde_yaml::Error) -> Diagnostic {
    let mut d = diagnose_parse_error(source, err);
    let line = d.location.and_then(|l| source.lines().nth(l.line.saturating_sub(1)));
    if d.location.is_none() {
        // Problems of the whole file have no position of their own: point at the second document, or the start.
        if d.message.contains("more than one document") {
            let second = source.lines().enumerate().filter(|(_, l)| l.starts_with("---")).map(|(i, _)| i + 1).find(|&n| {
                // A `---` after content starts a second document.
                source.lines().take(n - 1).any(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with("---"))
            });
            d.location = Some(Location { line: second.unwrap_or(1), column: 1 });
            d.hint = Some(match second {
                Some(_) => "a spec is one YAML document: remove the `---` line and what follows, or put it in a file of its own".into(),
                None => "the file reads as more than one YAML document: the top-level keys (`name`, `provider`, `ssh`, `sfu`) must all start in column 1".into(),
            });
        } else {
            d.location = Some(Location { line: 1, column: 1 });
            if d.message.contains("repetition limit") || d.message.contains("recursion limit") {
                d.hint = Some("the file expands to too much data (deeply nested, or aliases `*x` repeated many times): write the spec out plainly".into());
            }
        }
    }
    if d.hint.is_none() && line.is_some_and(|l| l.trim_end().starts_with(char::is_whitespace) && l[..l.len() - l.trim_start().len()].contains('\t')) {
        d.hint = Some("this line is indented with a tab: YAML indents with spaces only".into());
    }
    d
}

/// What a field of the wrong type takes, in words, from serde's "expected …".
fn type_hint(field: &str, message: &str) -> Option<String> {
    let (_, expected) = message.rsplit_once("expected ")?;
    let takes = match expected.trim() {
        "u16" => "a port number from 1 to 65535".to_string(),
        "u32" => "a whole number".to_string(),
        "a string" => "text (quote it if YAML reads it as a number, list or `true`)".to_string(),
        "a boolean" => "`true` or `false`".to_string(),
        "a sequence" => "a list, e.g. `[443]`, or one `- item` per line".to_string(),
        "a map" => "a mapping of `NAME: value` lines".to_string(),
        other if other.starts_with("struct ") => "a mapping of fields (`key: value` lines, indented under it)".to_string(),
        other if other.starts_with("a port range") || other.contains("port range") => "a port range like `40000-41000`".to_string(),
        _ => return None,
    };
    Some(format!("`{field}` takes {takes}"))
}

/// `x` of "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    message.strip_prefix("unknown field `")?.split('`').next().map(str::to_string)
}

/// The names after "expected" in serde's message (`one of `a`, `b``, or a single `a`).
fn expected_names(message: &str) -> Option<Vec<String>> {
    let (_, list) = message.split_once("expected")?;
    Some(list.split('`').skip(1).step_by(2).map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../tests/fixtures/janus-digitalocean.yaml");

    fn fields(p: &Parsed) -> Vec<&str> {
        p.errors.iter().map(|d| d.field.as_str()).collect()
    }

    #[test]
    fn a_good_spec_parses_whole() {
        let p = parse_all(GOOD);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.spec.is_some());
    }

    #[test]
    fn several_unknown_fields_are_all_reported_with_their_lines() {
        let source = GOOD.replace("allow_from", "alow_from").replace("rtc_ports", "rtc_port");
        let p = parse_all(&source);
        assert_eq!(fields(&p), ["ssh.alow_from", "sfu.rtc_port"], "{:?}", p.errors);
        assert_eq!(p.errors[0].location, Some(Location { line: 6, column: 3 }));
        assert_eq!(p.errors[1].location, Some(Location { line: 9, column: 3 }));
        assert!(p.errors[1].hint.as_deref().unwrap().starts_with("did you mean `rtc_ports`?"));
        // `rtc_ports` is then missing, but the suggestion already says so; the rest of `sfu` holds a placeholder.
        assert!(p.spec.is_some());
        assert_eq!(p.dropped, ["ssh.allow_from", "sfu.rtc_ports", "sfu"]);
    }

    #[test]
    fn type_errors_in_optional_fields_leave_the_rest_readable() {
        let source = GOOD.replace("[443]", "[https, 80]").replace("ssh:\n", "ssh:\n  port: twenty-two\n");
        let p = parse_all(&source);
        assert_eq!(fields(&p), ["ssh.port", "sfu.tcp_ports[0]"], "{:?}", p.errors);
        assert_eq!(p.errors[1].location.unwrap().line, 11);
        let spec = p.spec.expect("the rest is usable");
        assert_eq!(spec.sfu.tcp_ports, [80]);
        assert_eq!(p.dropped, ["ssh.port", "sfu.tcp_ports[0]"]);
    }

    #[test]
    fn removed_items_keep_their_original_indices() {
        let p = parse_all(&GOOD.replace("[443]", "[a, 1, b]"));
        assert_eq!(fields(&p), ["sfu.tcp_ports[0]", "sfu.tcp_ports[2]"], "{:?}", p.errors);
    }

    #[test]
    fn a_bad_required_field_is_reported_once() {
        let p = parse_all(&GOOD.replace("kind: janus", "kind: jnus").replace("name: demo", "name: [demo]"));
        assert_eq!(fields(&p), ["name", "sfu.kind"], "{:?}", p.errors);
        assert!(p.errors[1].hint.as_deref().unwrap().starts_with("did you mean `janus`?"));
        assert!(p.dropped.iter().any(|d| d == "name") && p.dropped.iter().any(|d| d == "sfu"), "{:?}", p.dropped);
    }

    #[test]
    fn missing_sections_and_fields_are_each_reported() {
        let p = parse_all("name: x\nsfu:\n  rtc_ports: 1-2\n  bogus: 1\n");
        assert_eq!(fields(&p), ["sfu.bogus", "sfu.kind", "provider"], "{:?}", p.errors);
        assert_eq!(p.errors[1].location, Some(Location { line: 2, column: 1 }));
        assert_eq!(p.errors[1].message, "missing field `kind`");
        assert_eq!(p.errors[2].message, "missing field `provider`");
    }

    #[test]
    fn a_duplicate_key_is_located() {
        let p = parse_all(&GOOD.replace("  tcp_ports: [443]\n", "  tcp_ports: [443]\n  kind: coturn\n"));
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(p.errors[0].location, Some(Location { line: 11, column: 3 }));
    }

    /// Found by `scripts/fuzz-spec`: a value that cannot be written back as YAML (an empty tag `! x`) next to a
    /// `<<` ended the reading with no problem reported.
    #[test]
    fn a_value_that_cannot_be_written_back_still_gets_its_problems_reported() {
        let p = parse_all(";ssh:\n ! a`lon: :emo\nprovider:\n x\nr<9<<d: 1\n");
        assert!(!p.errors.is_empty(), "{p:?}");
        assert!(p.errors.iter().all(|d| !d.field.is_empty() || d.location.is_some()), "{:?}", p.errors);
        assert_eq!(p.errors[0].field, ";ssh", "{:?}", p.errors);
        let exact = parse_all(";ssh:\n ! a`lonYYYYYYYYYYYYYYYYYYYYYame: :emo\nme:ssh:\n ! a`loname: :ea   sfuctl r<9<<<<<<<<<<<d:\"!mo\nprovider:\n nd[j :an443]\n");
        assert!(!exact.errors.is_empty(), "{exact:?}");
    }

    #[test]
    fn merge_keys_are_resolved() {
        let source = "defaults: &d { kind: janus, rtc_ports: 40000-41000 }\nname: x\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.1 }] }\nsfu:\n  <<: *d\n  tcp_ports: [443]\n";
        let p = parse_all(source);
        assert_eq!(fields(&p), ["defaults"], "{:?}", p.errors);
        // Positions are the user's even though the merged value was read: `bogus` sits on line 7.
        let p = parse_all(&format!("{source}  bogus: 1\n"));
        assert_eq!(p.errors[1].field, "sfu.bogus", "{:?}", p.errors);
        assert_eq!(p.errors[1].location, Some(Location { line: 7, column: 3 }), "{:?}", p.errors);
        let ok = "name: x\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.1 }] }\nsfu:\n  <<: { kind: janus, rtc_ports: 40000-41000 }\n";
        let p = parse_all(ok);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.spec.unwrap().sfu.kind, crate::spec::SfuKind::Janus);
    }

    #[test]
    fn syntax_errors_and_non_mappings_stop_at_one() {
        assert_eq!(parse_all("name: [\n").errors.len(), 1);
        assert!(parse_all("").errors[0].message.contains("empty"));
        assert!(parse_all("- a\n").errors[0].message.contains("a list"));
        assert!(parse_all("just text").errors[0].message.contains("single value"));
        // Found by `scripts/fuzz-spec`: indented keys before a top-level one read as two documents, with no position.
        let fuzz = parse_all("# x\n  user: root\n  allow_from: [203.0.113.0/24]\nsfu:\n  kind: coturn\n");
        assert_eq!(fuzz.errors.len(), 1, "{:?}", fuzz.errors);
        assert!(fuzz.errors[0].location.is_some() && fuzz.errors[0].hint.as_deref().unwrap().contains("column 1"), "{:?}", fuzz.errors);
        let two = parse_all("# one\nname: a\n---\nname: b\n");
        assert_eq!(two.errors[0].location, Some(Location { line: 3, column: 1 }), "{:?}", two.errors);
    }
}
