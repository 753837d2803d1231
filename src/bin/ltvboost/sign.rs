//! `ltvboost sign`: the signature header value of the body on stdin.

use clap::Args;
use ltvboost_webhooks::signature::sign;
use serde_json::json;

use crate::args::{SecretArgs, stdin_bytes};
use crate::output::Output;

/// Print the signature header value of the body on stdin.
///
/// Example: printf '%s' "$BODY" | ltvboost sign --secret "$SECRET"
#[derive(Args)]
pub(crate) struct SignArgs {
    #[command(flatten)]
    secret: SecretArgs,
}

pub(crate) fn run(args: SignArgs, out: Output) -> anyhow::Result<()> {
    let signature = sign(&args.secret.signing()?, &stdin_bytes()?);
    out.print(json!({ "signature": signature }), || signature.clone())
}
