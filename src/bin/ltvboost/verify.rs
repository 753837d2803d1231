//! `ltvboost verify`: does a signature verify the body on stdin?

use clap::Args;
use serde_json::json;

use crate::args::{SecretArgs, stdin_bytes};
use crate::output::Output;

/// Check a signature against the body on stdin: exit 0 if it verifies, 1 if not.
///
/// Example: printf '%s' "$BODY" | ltvboost verify --signature "sha256=…"
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The x-ltvboost-signature header's value.
    #[arg(long)]
    signature: String,
    #[command(flatten)]
    secret: SecretArgs,
}

pub(crate) fn run(args: VerifyArgs, out: Output) -> anyhow::Result<()> {
    let verifier = args.secret.verifier()?;
    match verifier.verify(args.signature.as_bytes(), stdin_bytes()?) {
        Ok(verified) => {
            let index = verified.secret_index();
            out.print(json!({"verified": true, "secret_index": index}), || {
                format!("verified (secret #{index})")
            })
        }
        Err(e) => {
            if out.json {
                out.print(
                    json!({"verified": false, "reason": e.to_string()}),
                    String::new,
                )?;
            }
            Err(e.into())
        }
    }
}
