//! ARN globs for principal exemptions. `*` matches any run of characters
//! within one part of an ARN, `?` exactly one: neither ever matches `/` or
//! `:`, so `role/packer-*` cannot reach into another path, and an account
//! `*` cannot swallow the resource. Everything else is literal.
//!
//! Which globs are accepted at all (an IAM role or user, never a session;
//! never one that could match every name) is `Glob::parse`'s business.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

/// What an exemption glob names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Names {
    /// IAM roles: matched against the role an assumed-role session was
    /// issued from (`sessionContext.sessionIssuer.arn`), never the session.
    Role,
    /// IAM users: matched against the caller's own ARN.
    User,
}

fn is_separator(c: char) -> bool {
    c == '/' || c == ':'
}

impl Glob {
    /// A glob as written, unchecked (tests, and `parse` once it checked).
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    /// A principal exemption glob, checked: `arn:<partition>:iam::<account
    /// or *>:role/<path/>name` or `...:user/<path/>name`, whose name part is
    /// more than wildcards. The error says why, and how to write it instead.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        let parts: Vec<&str> = pattern.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts.as_slice() else {
            return Err(format!(
                "{pattern:?} is not an ARN glob (arn:aws:iam::<account or *>:role/<name>)"
            ));
        };
        if *arn != "arn" {
            return Err(format!(
                "{pattern:?} is not an ARN glob (it must start with arn:)"
            ));
        }
        if !matches!(*partition, "aws" | "aws-cn" | "aws-us-gov") {
            return Err(format!(
                "{pattern:?}: the partition is written out (aws, aws-cn or aws-us-gov)"
            ));
        }
        if *service == "sts" {
            let role = resource
                .strip_prefix("assumed-role/")
                .and_then(|r| r.split('/').next())
                .filter(|r| !r.is_empty())
                .unwrap_or("<role>");
            return Err(format!(
                "{pattern:?} matches a session ARN, whose last part the caller chooses (and `*` no longer spans /): exempt the role itself, arn:{partition}:iam::{account}:role/{role}"
            ));
        }
        if *service != "iam" || !region.is_empty() {
            return Err(format!(
                "{pattern:?}: an exemption names an IAM role or user, arn:{partition}:iam::<account>:role/<name>"
            ));
        }
        if *account != "*" && !crate::validate::is_account_id(account) {
            return Err(format!(
                "{pattern:?}: the account is twelve digits, or * for every account"
            ));
        }
        let Some((kind, path_and_name)) = resource.split_once('/') else {
            return Err(format!(
                "{pattern:?}: an exemption names a role or a user (role/<name>, user/<name>)"
            ));
        };
        if kind != "role" && kind != "user" {
            return Err(format!(
                "{pattern:?}: an exemption names a role or a user, not a {kind}"
            ));
        }
        let name = path_and_name.rsplit('/').next().unwrap_or("");
        if name.chars().all(|c| c == '*' || c == '?') {
            return Err(format!(
                "{pattern:?} would exempt every {kind} {}: name it ({kind}/<name>, with * inside a name, e.g. {kind}/packer-*)",
                if path_and_name.contains('/') { "on that path" } else { "of the account" }
            ));
        }
        if path_and_name.split('/').any(str::is_empty) {
            return Err(format!("{pattern:?}: an empty path segment"));
        }
        Ok(Glob(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The glob as compared with one recorded earlier: spaces around it
    /// and runs of `*` (which match what one `*` matches) do not make it
    /// another glob, so a cosmetic edit of `EXEMPT_PRINCIPAL_ARNS` leaves
    /// the records it made honoured.
    pub fn canonical(pattern: &str) -> String {
        let mut out = String::with_capacity(pattern.len());
        for c in pattern.trim().chars() {
            if !(c == '*' && out.ends_with('*')) {
                out.push(c);
            }
        }
        out
    }

    /// Whether `recorded` (a record's glob) is this glob, up to `canonical`.
    pub fn is(&self, recorded: &str) -> bool {
        Glob::canonical(&self.0) == Glob::canonical(recorded)
    }

    /// What the glob names: a role (matched against the role behind a
    /// session) or a user.
    pub fn names(&self) -> Names {
        if self.0.contains(":user/") {
            Names::User
        } else {
            Names::Role
        }
    }

    /// Whether `text` matches: part by part (the separators `/` and `:`
    /// must line up), each part with `*` and `?` inside it only.
    pub fn matches(&self, text: &str) -> bool {
        let p: Vec<&str> = self.0.split(is_separator).collect();
        let t: Vec<&str> = text.split(is_separator).collect();
        let seps = |s: &str| s.chars().filter(|c| is_separator(*c)).collect::<String>();
        p.len() == t.len()
            && seps(&self.0) == seps(text)
            && p.iter().zip(&t).all(|(p, t)| part_matches(p, t))
    }
}

/// Iterative wildcard match within one part, with a single backtracking
/// point: linear in practice and never recursive, so hostile input cannot
/// blow the stack.
fn part_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_wildcards_within_a_part() {
        let g = Glob::new("arn:aws:iam::*:role/packer-*");
        assert!(g.matches("arn:aws:iam::123456789012:role/packer-builder"));
        assert!(!g.matches("arn:aws:iam::123456789012:role/admin"));
        assert!(!g.matches("arn:aws:iam::123456789012:role/packer"));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exact-not"));
        assert!(Glob::new("*x*y*").matches("..x..y.."));
        assert!(!Glob::new("*x*y*").matches("..y..x.."));
    }

    #[test]
    fn a_star_never_crosses_a_slash_or_a_colon() {
        let g = Glob::new("arn:aws:iam::*:role/packer-*");
        assert!(!g.matches("arn:aws:iam::123456789012:role/packer-team/admin"));
        assert!(!Glob::new("arn:aws:iam::*:role/*builder*")
            .matches("arn:aws:iam::123456789012:role/ci/x/builder"));
        // Nor does `?`: it stands for one character within a part.
        assert!(
            Glob::new("arn:aws:iam::*:role/ci-?").matches("arn:aws:iam::123456789012:role/ci-a")
        );
        assert!(
            !Glob::new("arn:aws:iam::*:role/ci?x").matches("arn:aws:iam::123456789012:role/ci/x")
        );
        assert!(!Glob::new("arn:aws:iam::12345678901?:role/x")
            .matches("arn:aws:iam::12345678901:role/x"));
        // The account `*` is one part: it cannot reach into the resource.
        assert!(!Glob::new("arn:aws:iam::*").matches("arn:aws:iam::123456789012:role/x"));
        // IAM Identity Center roles: the path written out, `*` in the name.
        let sso =
            Glob::new("arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*");
        assert!(sso.matches(
            "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123abcd"
        ));
        assert!(!sso.matches(
            "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Admin_0123abcd"
        ));
    }

    #[test]
    fn only_narrow_role_and_user_globs_are_accepted() {
        for ok in [
            "arn:aws:iam::111122223333:role/packer-builder",
            "arn:aws:iam::*:role/packer-builder",
            "arn:aws:iam::*:role/packer-*",
            "arn:aws:iam::*:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_*",
            "arn:aws-us-gov:iam::111122223333:user/break-glass",
        ] {
            assert!(Glob::parse(ok).is_ok(), "{ok}: {:?}", Glob::parse(ok));
        }
        for (bad, says) in [
            ("packer", "not an ARN glob"),
            ("arn:*", "not an ARN glob"),
            ("arn:aws:iam::*:role/*", "would exempt every role"),
            (
                "arn:aws:iam::*:role/team/**",
                "would exempt every role on that path",
            ),
            ("arn:aws:iam::*:user/?*", "would exempt every user"),
            ("arn:*:iam::*:role/x", "the partition is written out"),
            (
                "arn:aws:sts::123456789012:assumed-role/Legacy/*",
                "exempt the role itself, arn:aws:iam::123456789012:role/Legacy",
            ),
            ("arn:aws:iam::12345:role/x", "twelve digits"),
            ("arn:aws:iam::*:group/admins", "not a group"),
            (
                "arn:aws:ec2:us-east-1:*:instance/i-1",
                "an IAM role or user",
            ),
        ] {
            let e = Glob::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn long_hostile_input_is_fast_enough() {
        let text = "a".repeat(20_000);
        assert!(!Glob::new("*a*a*a*a*b").matches(&text));
    }
}
