//! How the user named their spec on the command line, so that every hint naming an sfuctl command is one they
//! can paste as it is: `sfuctl logs deploy/janus.yaml media-1`, not `sfuctl logs <spec> media-1`.

use std::path::Path;

/// The spec's path as the user typed it (relative when it was), for the commands hints tell them to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    spec: String,
}

impl Invocation {
    /// The spec path exactly as given on the command line.
    pub fn new(spec_path: &Path) -> Self {
        Self { spec: spec_path.to_string_lossy().into_owned() }
    }

    /// `sfuctl <verb> <spec>` followed by `rest` (arguments after the spec, e.g. a host or `--yes`), the spec path
    /// quoted for a POSIX shell when it needs to be.
    pub fn command(&self, verb: &str, rest: &str) -> String {
        let mut out = format!("sfuctl {verb} {}", shell_word(&self.spec));
        if !rest.is_empty() {
            out.push(' ');
            out.push_str(rest);
        }
        out
    }
}

/// `word` as one word of a POSIX shell command line: as it is when it holds only characters no shell treats
/// specially, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./+,:@%=".contains(c)) && !word.starts_with('=');
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_stays_as_typed() {
        let run = Invocation::new(Path::new("deploy/janus.yaml"));
        assert_eq!(run.command("logs", "media-1"), "sfuctl logs deploy/janus.yaml media-1");
        assert_eq!(run.command("up", ""), "sfuctl up deploy/janus.yaml");
        assert_eq!(Invocation::new(Path::new("./a.yaml")).command("up", "--yes"), "sfuctl up ./a.yaml --yes");
    }

    #[test]
    fn a_path_a_shell_would_split_is_quoted() {
        assert_eq!(Invocation::new(Path::new("my specs/it's.yaml")).command("audit", ""), r"sfuctl audit 'my specs/it'\''s.yaml'");
        assert_eq!(Invocation::new(Path::new("~/x.yaml")).command("up", ""), "sfuctl up '~/x.yaml'");
    }
}
