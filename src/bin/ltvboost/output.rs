//! What the commands print, and how a failure ends the process.
//!
//! Every result goes through [`Output::print`]: one JSON value on a line
//! with `--json`, the text otherwise. Text that came from outside (a
//! request, Redis, the registration API) goes through [`safe`] first, so a
//! control character in an event id is shown, never interpreted by the
//! terminal. Writes are fallible: a closed stdout is an error to handle, not
//! a panic.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;

use anyhow::Context as _;
use serde_json::Value;

/// Where results go: text or one JSON value per line.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// Prints `value` as one JSON line with `--json`, or else `text()`.
    pub(crate) fn print(&self, value: Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        let line = if self.json { json_line(&value) } else { text() };
        stdout_line(&line)
    }

    /// Prints `text()` in text mode only: progress that `--json` leaves out.
    pub(crate) fn text(&self, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json {
            return Ok(());
        }
        stdout_line(&text())
    }
}

/// `value` on one line. serde_json escapes C0 controls in strings but not
/// DEL, C1 controls or bidirectional controls: those are escaped too, so the
/// line stays the same JSON and shows the same on a terminal.
fn json_line(value: &Value) -> String {
    let line = value.to_string();
    if !line.chars().any(acted_on) {
        return line;
    }
    let mut shown = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if acted_on(c) {
            // Outside strings serde_json writes no such character.
            let _ = write!(shown, "\\u{:04x}", u32::from(c));
        } else {
            shown.push(c);
        }
    }
    shown
}

/// One line on stdout, flushed: the next command in a pipe sees it now.
fn stdout_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// A line on stderr. A closed stderr has nowhere left to report to, so its
/// error is dropped rather than turned into a panic, as `eprintln!` would.
pub(crate) fn note(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `text` with every character a terminal would act on written out as an
/// escape (`\u{1b}`, `\n`, …): C0 and C1 controls, DEL, and the bidirectional
/// controls that reorder what is shown. Everything else is kept.
pub(crate) fn safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acted_on) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if acted_on(c) {
            let _ = write!(shown, "{}", c.escape_default());
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

/// Like [`safe`], but keeps line breaks and tabs: for a block of text (an
/// event's JSON, an error with a hint on its own line).
pub(crate) fn safe_block(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| acted_on(c) && !matches!(c, '\n' | '\t'))
    {
        return Cow::Borrowed(text);
    }
    text.split('\n')
        .map(|line| line.split('\t').map(safe).collect::<Vec<_>>().join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
        .into()
}

fn acted_on(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `error`, then `hint` on a line of its own: what the user can do about it.
pub(crate) fn hinted(error: anyhow::Error, hint: &str) -> anyhow::Error {
    anyhow::anyhow!("{error:#}\n{hint}")
}

/// A usage error: the command line asked for something that cannot be
/// done as asked. Exit code 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error, as an error the commands return.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// A failure the command has already reported on stdout (`verify` that did
/// not verify, `send` that was not delivered): exit 1, nothing more said.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed")
    }
}

impl std::error::Error for Reported {}

/// The process's exit code for a command's result, with the error said on
/// stderr (every cause, one per `: `, control characters escaped).
pub(crate) fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(error) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    if error.downcast_ref::<Reported>().is_some() {
        return std::process::ExitCode::from(1);
    }
    note(format_args!(
        "ltvboost: {}",
        safe_block(&format!("{error:#}"))
    ));
    if error.downcast_ref::<Usage>().is_some() {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(safe("evt_1"), "evt_1");
        assert_eq!(safe("a\u{1b}[2Jb\u{7}"), "a\\u{1b}[2Jb\\u{7}");
        assert_eq!(safe("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(safe("\u{9b}\u{7f}"), "\\u{9b}\\u{7f}");
        assert_eq!(safe("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(safe("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
        assert_eq!(safe_block("a\n\tb\u{1b}"), "a\n\tb\\u{1b}");
        assert_eq!(safe_block("{\"a\":\r1}"), "{\"a\":\\r1}");
        let value = serde_json::json!({"id": "a\u{1b}\u{7}\u{7f}\u{9b}\u{202e}b"});
        let line = json_line(&value);
        assert_eq!(line, r#"{"id":"a\u001b\u0007\u007f\u009b\u202eb"}"#);
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
    }
}
