//! Which guard this is: the crate's version and the commit it was built
//! from (`build.rs`). The functions' first log line, every report and every
//! message carry it, so a person reading one knows which code wrote it
//! (docs/releasing.md: which versions read which records).

use serde::Serialize;

/// The crate's version (`Cargo.toml`; the SAR `SemanticVersion` equals it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit built from, 12 hex digits, or `unknown` outside a git
/// checkout without `IMDS_GUARD_COMMIT`.
pub const COMMIT: &str = env!("IMDS_GUARD_COMMIT");
/// `0.1.0 (commit 0123456789ab)`: what `imds-guard --version` prints after
/// the name.
pub const LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("IMDS_GUARD_COMMIT"),
    ")"
);

/// The `release` of a report or message: `{"version": …, "commit": …}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: &'static str,
    pub commit: &'static str,
}

impl Release {
    pub const THIS: Release = Release {
        version: VERSION,
        commit: COMMIT,
    };
}

impl Default for Release {
    fn default() -> Release {
        Release::THIS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_version_and_a_commit() {
        assert_eq!(LINE, format!("{VERSION} (commit {COMMIT})"));
        // Built in this project's git checkout, the commit is named (12 hex
        // digits); elsewhere it is `unknown` or what IMDS_GUARD_COMMIT said.
        let checkout = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.git"));
        if checkout.exists() && std::env::var_os("IMDS_GUARD_COMMIT").is_none() {
            assert_eq!(COMMIT.len(), 12, "{COMMIT}");
            assert!(COMMIT.bytes().all(|b| b.is_ascii_hexdigit()), "{COMMIT}");
        }
        assert!(!COMMIT.is_empty() && !COMMIT.contains(char::is_whitespace));
        let v = serde_json::to_value(Release::THIS).unwrap();
        assert_eq!(v["version"], VERSION);
        assert_eq!(v["commit"], COMMIT);
    }
}
