//! `ltvboost completions`: a shell completion script on stdout.

use std::io::Write;

use anyhow::Context as _;
use clap::{Args, CommandFactory};

use crate::Cli;

/// Print a shell completion script.
///
/// Example: ltvboost completions bash > ~/.local/share/bash-completion/completions/ltvboost
#[derive(Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

pub(crate) fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "ltvboost", &mut script);
    match std::io::stdout().write_all(&script) {
        // `ltvboost completions bash | head` is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("writing to stdout"),
    }
}
