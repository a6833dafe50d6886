//! Names the commit the guard is built from (`IMDS_GUARD_COMMIT`, read by
//! `release.rs`): a release's log lines, reports and messages say which code
//! wrote them. Set `IMDS_GUARD_COMMIT` to name it where there is no git
//! checkout (a source tarball); with neither, the commit is `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Whether git's work tree is this workspace's (crates/domain is two below
/// it): a source tarball unpacked inside some other repository (a home
/// directory kept in git, say) must not take that repository's commit.
fn ours() -> bool {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let top = git(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    match (
        top.and_then(|t| t.canonicalize().ok()),
        workspace.canonicalize(),
    ) {
        (Some(top), Ok(workspace)) => top == workspace,
        _ => false,
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=IMDS_GUARD_COMMIT");
    let told = std::env::var("IMDS_GUARD_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    let ours = ours();
    // The full hash cut to 12: `--short` may lengthen it when a prefix is
    // ambiguous, and the same commit must read the same everywhere.
    let commit = told
        .or_else(|| ours.then(|| git(&["rev-parse", "HEAD"])).flatten())
        .map(|c| c.chars().take(12).collect::<String>())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMDS_GUARD_COMMIT={commit}");
    if !ours {
        return;
    }
    // Built again when HEAD moves: HEAD, its reflog (written on every
    // commit, checkout and reset), the branch HEAD names and the packed
    // refs, each where git keeps it (a worktree's branch lives in the
    // common directory). Only paths that exist: Cargo reruns for a missing
    // one on every build.
    let mut watched = vec!["HEAD".to_string(), "logs/HEAD".into(), "packed-refs".into()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in &watched {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
