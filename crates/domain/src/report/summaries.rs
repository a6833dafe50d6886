//! What an invocation's side effects came to: what the circuit breaker held
//! back, and the Security Hub findings filed, by compliance status.

use super::*;

/// What the breaker held back, and which ceiling it reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tripped {
    /// The ceilings reached, as settings (`MAX_CHANGES_PER_RUN=500`).
    pub limits: Vec<String>,
    /// Instances left as they are that would have been changed.
    pub held: u64,
}

impl Tripped {
    pub fn merge(&mut self, other: Tripped) {
        for l in other.limits {
            if !self.limits.contains(&l) {
                self.limits.push(l);
            }
        }
        self.held += other.held;
    }

    /// The headline's first words.
    pub fn headline(&self) -> String {
        format!(
            "CIRCUIT BREAKER held {} change(s) ({})",
            self.held,
            self.limits.join(", ")
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComplianceStatus {
    Passed,
    Warning,
    Failed,
}

impl ComplianceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ComplianceStatus::Passed => "PASSED",
            ComplianceStatus::Warning => "WARNING",
            ComplianceStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PASSED" => Some(ComplianceStatus::Passed),
            "WARNING" => Some(ComplianceStatus::Warning),
            "FAILED" => Some(ComplianceStatus::Failed),
            _ => None,
        }
    }
}

/// What the findings of one invocation came to, by compliance status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FindingsReport {
    /// Findings filed, by compliance status (`PASSED`, `WARNING`, `FAILED`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub filed: BTreeMap<ComplianceStatus, u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub archived: u64,
    /// Possible credential theft filed (`finding::theft`): not a check's
    /// finding, so no compliance status.
    #[serde(skip_serializing_if = "is_zero")]
    pub theft: u64,
    /// Already as Security Hub holds them (a sweep files only changes).
    #[serde(skip_serializing_if = "is_zero")]
    pub unchanged: u64,
    /// Handed to the outputs function, which files them (the event
    /// function carries no Security Hub client).
    #[serde(skip_serializing_if = "is_zero")]
    pub queued: u64,
    /// Regions where Security Hub is not enabled, and the like.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Findings Security Hub refused, or calls that failed: the invocation
    /// fails and names them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl FindingsReport {
    pub fn merge(&mut self, other: FindingsReport) {
        for (k, v) in other.filed {
            *self.filed.entry(k).or_default() += v;
        }
        self.archived += other.archived;
        self.theft += other.theft;
        self.unchanged += other.unchanged;
        self.queued += other.queued;
        self.warnings.extend(other.warnings);
        self.errors.extend(other.errors);
    }

    pub fn is_empty(&self) -> bool {
        self == &FindingsReport::default()
    }
}
