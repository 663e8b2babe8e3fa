//! How results are printed: text for people or JSON for scripts, chosen once by `--output`. Progress, warnings
//! and errors always go to stderr; results go to stdout, here.

use clap::ValueEnum;
use serde::Serialize;

/// The result format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people.
    Text,
    /// JSON on stdout, for scripts.
    Json,
}

impl Output {
    /// Prints a command's result: `json` pretty-printed, or `text` as it is (it brings its own newlines).
    pub fn emit(self, json: &impl Serialize, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        match self {
            Self::Json => println!("{}", serde_json::to_string_pretty(json)?),
            Self::Text => print!("{}", text()),
        }
        Ok(())
    }
}
