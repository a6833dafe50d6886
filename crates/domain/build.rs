//! Names the commit the guard is built from (`IMDS_GUARD_COMMIT`, read by
//! `release.rs`): a release's log lines, reports and messages say which code
//! wrote them. Set `IMDS_GUARD_COMMIT` to name it where there is no git
//! checkout (a source tarball); with neither, the commit is `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=IMDS_GUARD_COMMIT");
    let commit = std::env::var("IMDS_GUARD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=IMDS_GUARD_COMMIT={commit}");
    // Built again when HEAD moves: HEAD itself, the branch it names and the
    // packed refs. Only paths that exist (Cargo reruns for a missing one on
    // every build).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(branch));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
