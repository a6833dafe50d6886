//! ARN globs for principal exemptions: `*` matches any run of characters
//! (including `/` and `:`), `?` exactly one; everything else is literal.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative wildcard match with single backtracking point: linear in
    /// practice and never recursive, so hostile input cannot blow the stack.
    pub fn matches(&self, text: &str) -> bool {
        let p: Vec<char> = self.0.chars().collect();
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
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn literal_and_wildcards() {
        let g = Glob::new("arn:aws:iam::*:role/packer-*");
        assert!(g.matches("arn:aws:iam::123456789012:role/packer-builder"));
        assert!(!g.matches("arn:aws:iam::123456789012:role/admin"));
        assert!(!g.matches("arn:aws:iam::123456789012:role/packer"));
        assert!(Glob::new("arn:aws:sts::123456789012:assumed-role/Legacy/*")
            .matches("arn:aws:sts::123456789012:assumed-role/Legacy/i-0abc"));
        assert!(Glob::new("a?c").matches("abc"));
        assert!(!Glob::new("a?c").matches("ac"));
        assert!(Glob::new("exact").matches("exact"));
        assert!(!Glob::new("exact").matches("exact-not"));
        assert!(Glob::new("*x*y*").matches("..x..y.."));
        assert!(!Glob::new("*x*y*").matches("..y..x.."));
    }

    #[test]
    fn long_hostile_input_is_fast_enough() {
        let text = "a".repeat(20_000);
        assert!(!Glob::new("*a*a*a*a*b").matches(&text));
    }
}
