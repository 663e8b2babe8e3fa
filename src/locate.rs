//! Finding where a field sits in the spec's YAML text, so errors can name its line and column.
//!
//! The YAML parser reports missing fields and duplicate keys at line 1 column 1, and validation after parsing has
//! no positions at all. Specs are small block-style documents, so a scan that follows indentation finds a dotted
//! path (`sfu.rtc_ports`, `provider.hosts[1].address`) well enough; flow-style parts fall back to their parent.

/// A 1-based line and column in the spec file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a dotted path: a mapping key or a sequence index.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

/// A non-blank, non-comment line with its indentation.
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

fn content_lines(source: &str) -> Vec<Line<'_>> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let text = raw.trim_start();
            (!text.is_empty() && !text.starts_with('#') && text != "---")
                .then(|| Line { number: i + 1, indent: raw.len() - text.len(), text })
        })
        .collect()
}

/// The key a line starts with (`key:` or `- key:`), with the column where the key begins.
fn key_of<'a>(line: &Line<'a>) -> Option<(&'a str, usize)> {
    let (text, offset) = match line.text.strip_prefix("- ") {
        Some(rest) => (rest.trim_start(), line.indent + (line.text.len() - rest.trim_start().len())),
        None => (line.text, line.indent),
    };
    let colon = text.find(':')?;
    let key = text[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
    let after = &text[colon + 1..];
    (!key.is_empty() && (after.is_empty() || after.starts_with(' '))).then_some((key, offset + 1))
}

/// Finds the line and column of a dotted field path (`sfu.rtc_ports`, `provider.hosts[0].name`).
///
/// Returns the deepest part of the path that could be found, so an error always points somewhere useful; `None`
/// only when not even the first key is in the text.
pub fn find(source: &str, path: &str) -> Option<Location> {
    let lines = content_lines(source);
    let mut found = None;
    // Where the last found node's value starts on its line (after `key:` or `- `), for flow-style values.
    let mut value_at: Option<(usize, usize)> = None;
    let all = steps(path);
    // The window of lines that belong to the current node, and the indentation its children must exceed.
    let (mut start, mut end, mut parent_indent): (usize, usize, Option<usize>) = (0, lines.len(), None);
    let mut consumed = 0;
    for (n, step) in all.iter().enumerate() {
        consumed = n;
        let step = match step {
            Step::Key(k) => Step::Key(k),
            Step::Index(i) => Step::Index(*i),
        };
        let Some(child_indent) = lines[start..end]
            .iter()
            .map(|l| l.indent)
            .filter(|&i| parent_indent.is_none_or(|p| i > p) || matches!(step, Step::Index(_)))
            .min()
        else {
            break;
        };
        match step {
            Step::Key(key) => {
                let Some(pos) = (start..end).find(|&i| {
                    let l = &lines[i];
                    let effective = if l.text.starts_with("- ") { l.indent + 2 } else { l.indent };
                    (effective == child_indent || l.indent == child_indent) && key_of(l).is_some_and(|(k, _)| k == key)
                }) else {
                    break;
                };
                let Some((k, column)) = key_of(&lines[pos]) else { break };
                found = Some(Location { line: lines[pos].number, column });
                value_at = Some((pos, column + k.len()));
                consumed = n + 1;
                let own = column - 1;
                let stop = (pos + 1..end).find(|&i| lines[i].indent <= own && !(lines[i].indent == own && lines[i].text.starts_with("- "))).unwrap_or(end);
                (start, end, parent_indent) = (pos, stop, Some(own));
                // The node's own line is not one of its children.
                start += 1;
                if start >= end {
                    break;
                }
            }
            Step::Index(index) => {
                let items: Vec<usize> =
                    (start..end).filter(|&i| lines[i].text.starts_with("- ") && lines[i].indent == child_indent).collect();
                let Some(&pos) = items.get(index) else { break };
                found = Some(Location { line: lines[pos].number, column: lines[pos].indent + 3 });
                value_at = Some((pos, lines[pos].indent + 2));
                consumed = n + 1;
                let stop = items.get(index + 1).copied().unwrap_or(end);
                // The item's first key sits on the dash line: keep that line in the window.
                (start, end, parent_indent) = (pos, stop, Some(lines[pos].indent));
            }
        }
    }
    // A flow value (`[a, b]`, `{ k: v }`) on the found node's line holds the rest of the path.
    if let (Some((line_index, value)), true) = (value_at, consumed < all.len()) {
        let line = &lines[line_index];
        if let Some(col) = value.checked_sub(line.indent).and_then(|from| flow_find(line.text, from, &all[consumed..])) {
            return Some(Location { line: line.number, column: line.indent + col + 1 });
        }
    }
    found
}

/// Within one line's flow value (`[a, b]`, `{ k: v, l: [1, 2] }`) starting at byte `from` (0-based, at or
/// before the opening bracket), the 0-based byte column of the deepest node of `path` found; `None` when the value
/// is not a flow collection or its first step is not in it.
fn flow_find(text: &str, from: usize, path: &[Step<'_>]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let (open, close) = match bytes.get(i) {
        Some(b'[') => (b'[', b']'),
        Some(b'{') => (b'{', b'}'),
        _ => return None,
    };
    let (step, rest) = path.split_first()?;
    // The starts of the collection's items, at depth 1 (quotes and nested brackets skipped).
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut item_start = true;
    let mut j = i;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'[' | b'{' => depth += 1,
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                b',' if depth == 1 => item_start = true,
                b'#' if j > 0 && bytes[j - 1] == b' ' => break,
                _ => {}
            },
        }
        if item_start && depth == 1 && !matches!(b, b' ' | b',') && b != open && b != close {
            items.push(j);
            item_start = false;
        }
        j += 1;
    }
    let (at, value) = match (step, open) {
        (Step::Index(n), b'[') => {
            let at = *items.get(*n)?;
            (at, at)
        }
        (Step::Key(key), b'{') => items.iter().find_map(|&at| {
            let rest_of = &text[at..];
            let colon = rest_of.find(':')?;
            let k = rest_of[..colon].trim().trim_matches(|c| c == '"' || c == '\'');
            (k == *key).then_some((at, at + colon + 1))
        })?,
        _ => return None,
    };
    if rest.is_empty() {
        return Some(at);
    }
    Some(flow_find(text, value, rest).unwrap_or(at))
}

/// Finds the first line whose key is `key`, at any depth.
pub fn find_key(source: &str, key: &str) -> Option<Location> {
    content_lines(source).iter().find_map(|l| key_of(l).filter(|(k, _)| *k == key).map(|(_, column)| Location { line: l.number, column }))
}

/// Finds the second `key:` within one mapping: the parser reports duplicate keys without a position.
pub fn find_duplicate(source: &str, key: &str) -> Option<Location> {
    let mut ancestors: Vec<(usize, usize)> = Vec::new(); // (key column, line) of the enclosing keys
    let mut seen = std::collections::HashSet::new();
    for line in content_lines(source) {
        let Some((k, column)) = key_of(&line) else { continue };
        while ancestors.last().is_some_and(|&(c, _)| c >= column) {
            ancestors.pop();
        }
        let parent = ancestors.last().map_or(0, |&(_, l)| l);
        if k == key && !seen.insert(parent) {
            return Some(Location { line: line.number, column });
        }
        ancestors.push((column, line.number));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "\
name: demo
provider:
  kind: ssh
  hosts:
    - name: a
      address: 203.0.113.10
    - { name: b, address: 203.0.113.11 }
ssh:
  user: root
sfu:
  kind: janus
  rtc_ports: 40000-41000   # media
  env:
    A: b
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(find(SPEC, "name"), Some(Location { line: 1, column: 1 }));
        assert_eq!(find(SPEC, "sfu.rtc_ports"), Some(Location { line: 12, column: 3 }));
        assert_eq!(find(SPEC, "sfu.env.A"), Some(Location { line: 14, column: 5 }));
        assert_eq!(find(SPEC, "ssh.user"), Some(Location { line: 9, column: 3 }));
    }

    #[test]
    fn finds_sequence_items_and_their_keys() {
        assert_eq!(find(SPEC, "provider.hosts[0].address"), Some(Location { line: 6, column: 7 }));
        assert_eq!(find(SPEC, "provider.hosts[0].name"), Some(Location { line: 5, column: 7 }));
        // A key inside a flow mapping is found on the item's line.
        assert_eq!(find(SPEC, "provider.hosts[1].address"), Some(Location { line: 7, column: 18 }));
    }

    #[test]
    fn falls_back_to_the_deepest_found_parent() {
        assert_eq!(find(SPEC, "sfu.tcp_ports"), Some(Location { line: 10, column: 1 }));
        assert_eq!(find(SPEC, "nothing"), None);
    }

    #[test]
    fn finds_items_and_keys_inside_flow_values() {
        let spec = "ssh: { allow_from: [203.0.113.7/32, \"10.0.0.0/8\"], port: 22 }\nsfu:\n  tcp_ports: [443, 80]\n  env: {A: \"x, y\", B: 1}\n";
        assert_eq!(find(spec, "ssh.allow_from[1]"), Some(Location { line: 1, column: 37 }));
        assert_eq!(find(spec, "ssh.port"), Some(Location { line: 1, column: 52 }));
        assert_eq!(find(spec, "sfu.tcp_ports[1]"), Some(Location { line: 3, column: 20 }));
        assert_eq!(find(spec, "sfu.env.B"), Some(Location { line: 4, column: 20 }));
        // Past the end of a list: the list's key.
        assert_eq!(find(spec, "sfu.tcp_ports[5]"), Some(Location { line: 3, column: 3 }));
        assert_eq!(find(SPEC, "provider.hosts[1].address"), Some(Location { line: 7, column: 18 }));
    }

    #[test]
    fn finds_the_second_occurrence_of_a_key() {
        let dup = "name: a\nprovider:\n  kind: ssh\nsfu:\n  kind: janus\n  x: 1\n  kind: coturn\n";
        assert_eq!(find_duplicate(dup, "kind"), Some(Location { line: 7, column: 3 }));
    }
}
