//! How a launch template and its versions are named: in events, in
//! groups, in the guard's records. Plain std at the bottom of the crate:
//! the event parser and the source policy both speak of templates.

/// A launch template, as EC2 shows it (what its versions do not say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    pub id: String,
    pub name: Option<String>,
    pub default_version: i64,
    pub latest_version: i64,
    pub tags: Vec<(String, String)>,
    /// The principal that created it (`CreatedBy`).
    pub created_by: Option<String>,
    /// EC2's `Operator`: set on a managed instance's template, which the
    /// service that operates it owns.
    pub operator: Option<crate::launcher::Operator>,
}

/// Which version of a template a launch uses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VersionRef {
    Default,
    Latest,
    Number(i64),
}

impl VersionRef {
    /// As Auto Scaling and EC2 write it: `$Default` (also when unset),
    /// `$Latest`, or a number.
    pub fn parse(v: Option<&str>) -> VersionRef {
        match v.map(str::trim) {
            Some("$Latest") => VersionRef::Latest,
            Some(n) => n
                .parse::<i64>()
                .map_or(VersionRef::Default, VersionRef::Number),
            None => VersionRef::Default,
        }
    }

    /// The version number it names in `t` today.
    pub fn resolve(&self, t: &Template) -> i64 {
        match self {
            VersionRef::Default => t.default_version,
            VersionRef::Latest => t.latest_version,
            VersionRef::Number(n) => *n,
        }
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionRef::Default => f.write_str("$Default"),
            VersionRef::Latest => f.write_str("$Latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

/// A launch template as a group (or an override of its mixed-instances
/// policy) names it: by id or by name, and a version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: VersionRef,
}

impl TemplateRef {
    pub fn names(&self, t: &Template) -> bool {
        self.id.as_deref() == Some(t.id.as_str())
            || (self.id.is_none() && self.name.is_some() && self.name == t.name)
    }
}
