//! `ltvboost endpoints rotate`: a new secret in two steps, so receivers hold
//! it before LTVboost signs with it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use ltvboost_webhooks::signature::{SECRET_ENV, Secret};
use serde_json::json;

use crate::args::{ApiArgs, SecretArgs};
use crate::output::{Output, hinted, note, usage};

/// What `endpoints rotate` was asked to do.
#[derive(Args)]
pub(crate) struct RotateArgs {
    id: String,
    /// Where the new secret is written (step 1) or read from (step 2).
    #[arg(long, value_name = "FILE")]
    new_secret_file: PathBuf,
    /// Register the secret in FILE with LTVboost (step 2).
    #[arg(long)]
    commit: bool,
    /// Step 1 also writes the new secret first into this secret file, the
    /// one receivers and workers follow (LTVBOOST_WEBHOOK_SECRET_FILE): they
    /// hold both secrets within two seconds, without a restart. The file is
    /// replaced in one rename (0600): a failed write leaves it as it was.
    #[arg(long, value_name = "SECRET_FILE", conflicts_with = "commit")]
    update_secret_file: Option<PathBuf>,
    #[command(flatten)]
    old: SecretArgs,
}

pub(crate) async fn run(args: RotateArgs, api: &ApiArgs, out: Output) -> anyhow::Result<()> {
    if args.commit {
        commit(&args, api, out).await
    } else {
        // The first step changes nothing at the API: no token needed.
        prepare(&args, out)
    }
}

/// Step 1: a new secret in the file, and the line to deploy.
fn prepare(args: &RotateArgs, out: Output) -> anyhow::Result<()> {
    let (id, path) = (&args.id, &args.new_secret_file);
    let new = Secret::generate()?;
    let new = new.expose_str().unwrap_or_default();
    if let Some(file) = &args.update_secret_file {
        return prepare_in_file(args, file, new, out);
    }
    let old = args.old.list(false)?;
    write_new_secret(path, new)?;
    let line = format!("{SECRET_ENV}={new},{}", old.trim());
    let commit = format!(
        "ltvboost endpoints rotate {id} --commit --new-secret-file {}",
        path.display()
    );
    out.print(
        json!({"id": id, "deploy": line, "secret_file": path, "then": commit}),
        || line.clone(),
    )?;
    if !out.json {
        note(format_args!(
            "the new secret is in {}; LTVboost still signs with the old one. Deploy that line to \
             every receiver, then run: {commit}",
            path.display()
        ));
    }
    Ok(())
}

/// Step 1 for receivers and workers that follow a secret file: the new
/// secret written first into it, then kept for step 2.
fn prepare_in_file(args: &RotateArgs, file: &Path, new: &str, out: Output) -> anyhow::Result<()> {
    let (id, path) = (&args.id, &args.new_secret_file);
    let flag =
        |e: &dyn std::fmt::Display| usage(format!("--update-secret-file {}: {e}", file.display()));
    let before = std::fs::read_to_string(file).map_err(|e| flag(&e))?;
    let held = ltvboost_webhooks::signature::Verifier::from_lines(&before).map_err(|e| flag(&e))?;
    // The step-1 file first: if the secret file cannot be written, it is
    // removed again and the command can be run again.
    write_new_secret(path, new)?;
    if let Err(e) = replace_file(file, &format!("{new}\n{before}")) {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| {
            format!(
                "--update-secret-file {}: not written, it is as it was",
                file.display()
            )
        });
    }
    let commit = format!(
        "ltvboost endpoints rotate {id} --commit --new-secret-file {}",
        path.display()
    );
    out.print(
        json!({"id": id, "secret_file": file, "secrets": held.secret_count() + 1, "new_secret_file": path, "then": commit}),
        || format!("{}: the new secret first, then the {} held before", file.display(), held.secret_count()),
    )?;
    if !out.json {
        note(format_args!(
            "receivers and workers that follow {} verify with the new secret within two seconds; \
             LTVboost still signs with the old one. Then run: {commit}",
            file.display()
        ));
    }
    Ok(())
}

/// Replaces `path` with `text` in one rename: a temporary file beside it,
/// with the original's mode, owner and group, written and synced, renamed
/// over it. A link is followed: the file it names is replaced (a secret
/// volume's links stay). A failure before the rename leaves `path` as it
/// was; once renamed, the new text is in force, and a failure to sync the
/// directory is only said.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let path = std::fs::canonicalize(path)?;
    let original = std::fs::metadata(&path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(
        ".{name}.{}.tmp",
        ltvboost_webhooks::dedupe::ClaimToken::random()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // Only a file this call created is removed on failure.
    let mut file = options.open(&temporary)?;
    let written = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::fchown(&file, Some(original.uid()), Some(original.gid()))?;
            file.set_permissions(original.permissions())?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    if let Err(e) = std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
        note(format_args!(
            "warning: {} is written, but its directory could not be synced ({e}): a crash \
             of the machine now could bring back the file as it was",
            path.display()
        ));
    }
    Ok(())
}

/// Step 2: register the secret step 1 wrote.
async fn commit(args: &RotateArgs, api: &ApiArgs, out: Output) -> anyhow::Result<()> {
    let (id, path) = (&args.id, &args.new_secret_file);
    let client = api.client()?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "--new-secret-file {}: {e} (run the command without --commit first)",
            path.display()
        ))
    })?;
    // Step 1 writes 64 hex digits: anything else is not its file.
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!(
            "--new-secret-file {}: not a secret written by step 1 (64 hex digits)",
            path.display()
        )));
    }
    let new = Secret::new(text)
        .map_err(|e| usage(format!("--new-secret-file {}: {e}", path.display())))?;
    client.webhooks().set_secret(id, &new).await.map_err(|e| {
        hinted(
            e.into(),
            &format!(
                "the new secret may or may not have been registered; receivers accept both \
                     meanwhile. {} is kept: running the same command again is safe",
                path.display()
            ),
        )
    })?;
    out.print(json!({"id": id, "committed": true}), || {
        format!("registered the secret in {} for {id}", path.display())
    })?;
    if !out.json {
        note(format_args!(
            "once ltvboost_webhook_secret_matches_total{{secret_index=\"1\"}} has not moved for \
             24 h, deploy {SECRET_ENV}=<the secret in {}> alone",
            path.display()
        ));
    }
    Ok(())
}

/// Writes a new secret to `path`, readable by its owner only, refusing to
/// replace a file that exists (it may hold a secret already registered).
pub(crate) fn write_new_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "exists already; it may hold a secret in use: choose another path".to_owned()
        } else {
            e.to_string()
        };
        usage(format!("--new-secret-file {}: {why}", path.display()))
    })?;
    let written = file
        .write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        // The file's name must survive a crash too: sync its directory.
        .and_then(|()| {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
        });
    if let Err(e) = written {
        // Nothing was sent with it: a half-written file would only mislead.
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("--new-secret-file {}", path.display()));
    }
    Ok(())
}
