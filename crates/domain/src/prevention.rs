//! The preventive policies the guard's own settings imply (`imds-guard
//! policy`): what the guard fixes after the fact, refused before it happens,
//! in the grammar of each AWS control, from one source of truth.
//!
//! * `Kind::Scp`, a service control policy: binds the principals of the
//!   accounts it is attached to, never the management account nor
//!   service-linked roles (Auto Scaling's launches).
//! * `Kind::Iam`, the same denies as an identity policy (an account outside
//!   an organization: it binds only whom it is attached to, the seed's own
//!   lesson).
//! * `Kind::Declarative`, the EC2 declarative policy for instance metadata
//!   defaults: the account default, unchangeable by the account.
//!
//! Each statement is AWS's documented form: the launch deny on the
//! `instance` resource with `ec2:MetadataHttpTokens`; the change deny on
//! the request's `ec2:Attribute/HttpTokens` with its `Null` guard (keying
//! a change on `ec2:MetadataHttpTokens`, the instance as it is, would deny
//! the guard's own fix). The text is deterministic (statements in a fixed
//! order, keys sorted, lists sorted and deduplicated) and minified; what it
//! cannot say goes to `Printed::notes`, for stderr.

use serde_json::{json, Map, Value};

use crate::glob::Glob;

/// AWS Organizations' limit on an SCP document, whitespace included.
pub const SCP_LIMIT: usize = 5_120;
/// IAM's limit on a customer managed policy, whitespace not counted.
pub const IAM_LIMIT: usize = 6_144;
/// AWS Organizations' limit on a declarative policy document.
pub const DECLARATIVE_LIMIT: usize = 10_000;

/// The Organizations guide this follows for the declarative policy's shape.
pub const DECLARATIVE_GUIDE: &str = "https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_declarative_syntax.html";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Scp,
    Iam,
    Declarative,
}

/// What the policy is made from: the guard's settings, and the roles only
/// the person running the command can name.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `EXEMPT_PRINCIPAL_ARNS`: carried over only where IAM means the same.
    pub exempt_principals: Vec<Glob>,
    /// `EXEMPT_IMAGE_IDS`: an AMI is no key of the instance resource.
    pub exempt_images: Vec<String>,
    /// `EXEMPT_TAG_KEY`: a launch tagged `<key>=true` is not denied.
    pub exempt_tag_key: Option<String>,
    /// `STATUS_TAG_KEY`: only the guard writes it.
    pub status_tag_key: String,
    /// `MAX_HOP_LIMIT`: a launch above it is denied.
    pub max_hop_limit: Option<i32>,
    /// The administrator role the way back stays open to (required for an
    /// SCP or an IAM policy).
    pub admin_roles: Vec<String>,
    /// The guard's roles: they write its tags.
    pub guard_roles: Vec<String>,
    /// Roles of the platform that may set the exempt tag.
    pub platform_roles: Vec<String>,
    /// Add AWS's statement refusing IMDSv1-delivered credentials.
    pub role_delivery: bool,
}

/// A policy, and what a person must know of it (for stderr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Printed {
    pub policy: String,
    pub notes: Vec<String>,
    /// One line per statement: its `Sid` and what it does (`--explain`).
    pub explained: Vec<String>,
}

/// Whether IAM's `ArnLike` matches exactly what the guard's glob matches.
/// IAM compares an ARN's six colon-separated parts one by one: in the first
/// five its `*` and `?` stay within the part, as the guard's do; in the
/// resource part they also match `/` (and `:`), which the guard's never
/// do. So a glob carries over only when its resource part is literal.
pub fn iam_means_the_same(glob: &Glob) -> Result<(), String> {
    let g = glob.as_str();
    let resource = g.splitn(6, ':').nth(5).unwrap_or("");
    if resource.contains(['*', '?']) {
        let head: Vec<&str> = g.splitn(6, ':').take(5).collect();
        let example = format!(
            "{}:{}",
            head.join(":"),
            resource.replace('*', "team/x").replace('?', "/")
        );
        return Err(format!(
            "EXEMPT_PRINCIPAL_ARNS glob {g:?} means something else to IAM: in an ARN's resource part IAM's `*` and `?` also match `/`, so as aws:PrincipalArn it would also exempt {example:?}, which the guard does not. Name those principals' ARNs literally (the account part may keep its `*`) and run this again"
        ));
    }
    Ok(())
}

/// The policy of `kind` for `inputs`, or why it cannot be written.
pub fn policy(kind: Kind, i: &Inputs) -> Result<Printed, String> {
    match kind {
        Kind::Declarative => declarative(i),
        Kind::Scp | Kind::Iam => denies(kind, i),
    }
}

/// The statements an SCP and an identity policy share.
fn denies(kind: Kind, i: &Inputs) -> Result<Printed, String> {
    if i.admin_roles.is_empty() {
        return Err("name the administrator role the documented way back stays open to (--admin-role ARN): without it, nobody could set HttpTokens=optional again, not even to undo a mistake".into());
    }
    for g in &i.exempt_principals {
        iam_means_the_same(g)?;
    }
    for r in i
        .admin_roles
        .iter()
        .chain(&i.guard_roles)
        .chain(&i.platform_roles)
    {
        let parts: Vec<&str> = r.splitn(6, ':').collect();
        let ok = matches!(
            parts.as_slice(),
            ["arn", "aws" | "aws-cn" | "aws-us-gov", "iam", "", account, resource]
                if (*account == "*" || crate::validate::is_account_id(account))
                    && (resource.starts_with("role/") || resource.starts_with("user/"))
        );
        if !ok {
            // aws:PrincipalArn is the role's ARN, never a session's (what
            // `aws sts get-caller-identity` prints).
            return Err(format!(
                "{r:?} is not an IAM role or user ARN (arn:aws:iam::<account>:role/<name>; for a session arn:aws:sts::<account>:assumed-role/<name>/<session>, name the role)"
            ));
        }
    }
    let mut notes = Vec::new();
    let mut explained = Vec::new();
    let admins = sorted(&i.admin_roles);
    let exempt: Vec<String> = sorted(
        &i.exempt_principals
            .iter()
            .map(|g| g.as_str().to_string())
            .chain(i.admin_roles.iter().cloned())
            .collect::<Vec<_>>(),
    );
    let instance = "arn:*:ec2:*:*:instance/*";
    let mut statements = Vec::new();

    // 1. A launch that does not require tokens.
    // The exempt tag lets a launch through only where the tag itself is
    // protected (the guard's roles named): else anyone could write it.
    let tag_exempts = i
        .exempt_tag_key
        .as_ref()
        .filter(|_| !i.guard_roles.is_empty());
    let mut condition = Map::new();
    condition.insert(
        "StringNotEquals".into(),
        json!({"ec2:MetadataHttpTokens": "required"}),
    );
    if let Some(key) = tag_exempts {
        // The guard reads `true` in any case.
        condition.insert(
            "StringNotEqualsIgnoreCase".into(),
            json!({ format!("aws:RequestTag/{key}"): "true" }),
        );
        notes.push(format!("a launch tagged {key}=true is let through (as the guard reads it, without the spaces around it the guard also accepts)"));
    } else if let Some(key) = &i.exempt_tag_key {
        notes.push(format!("EXEMPT_TAG_KEY {key}: not carried over, since without --guard-role the tag is not protected and anyone could write it"));
    }
    condition.insert("ArnNotLike".into(), json!({"aws:PrincipalArn": exempt}));
    statements.push(json!({
        "Sid": "RequireImdsV2AtLaunch",
        "Effect": "Deny",
        "Action": "ec2:RunInstances",
        "Resource": instance,
        "Condition": condition,
    }));
    explained.push(format!(
        "RequireImdsV2AtLaunch: a launch whose instance does not set HttpTokens=required is denied{}, except by {}",
        if tag_exempts.is_some() { " (unless tagged as the guard's exempt tag says)" } else { "" },
        exempt.join(", ")
    ));
    // 2. A hop limit above the guard's ceiling.
    if let Some(max) = i.max_hop_limit {
        statements.push(json!({
            "Sid": "CapHopLimitAtLaunch",
            "Effect": "Deny",
            "Action": "ec2:RunInstances",
            "Resource": instance,
            "Condition": {
                "NumericGreaterThan": {"ec2:MetadataHttpPutResponseHopLimit": max.to_string()},
                "ArnNotLike": {"aws:PrincipalArn": admins},
            },
        }));
        // After launch the request's value is typed String: the values
        // allowed are listed (the account default's -1 is no preference).
        let allowed: Vec<String> = (1..=max.max(1)).map(|n| n.to_string()).collect();
        let mut with_none = allowed.clone();
        with_none.insert(0, "-1".into());
        statements.push(json!({
            "Sid": "CapHopLimitAfterLaunch",
            "Effect": "Deny",
            "Action": "ec2:ModifyInstanceMetadataOptions",
            "Resource": instance,
            "Condition": {
                "StringNotEquals": {"ec2:Attribute/HttpPutResponseHopLimit": allowed},
                "Null": {"ec2:Attribute/HttpPutResponseHopLimit": "false"},
                "ArnNotLike": {"aws:PrincipalArn": admins},
            },
        }));
        statements.push(json!({
            "Sid": "CapTheDefaultHopLimit",
            "Effect": "Deny",
            "Action": "ec2:ModifyInstanceMetadataDefaults",
            "Resource": "*",
            "Condition": {
                "StringNotEquals": {"ec2:Attribute/HttpPutResponseHopLimit": with_none},
                "Null": {"ec2:Attribute/HttpPutResponseHopLimit": "false"},
                "ArnNotLike": {"aws:PrincipalArn": admins},
            },
        }));
        explained.push(format!(
            "CapHopLimitAtLaunch, CapHopLimitAfterLaunch, CapTheDefaultHopLimit: a hop limit above {max} (MAX_HOP_LIMIT) is denied at launch, on a running instance and as the account default, except by the administrator role"
        ));
        // Their lists would not fit an SCP beside the launch's and the
        // change's: the exemptions cover HttpTokens, not the ceiling.
        if !i.exempt_principals.is_empty() {
            notes.push(format!("the hop-limit ceiling ({max}) binds exempt principals too (only the administrator role is excepted): their exemption covers HttpTokens"));
        }
    }
    // 3. A change that turns IMDSv1 back on: the request's value, guarded
    // as AWS's example is (`Null`: only a request that sets it).
    statements.push(json!({
        "Sid": "NoImdsV1AfterLaunch",
        "Effect": "Deny",
        "Action": "ec2:ModifyInstanceMetadataOptions",
        "Resource": instance,
        "Condition": {
            "StringNotEquals": {"ec2:Attribute/HttpTokens": "required"},
            "Null": {"ec2:Attribute/HttpTokens": "false"},
            "ArnNotLike": {"aws:PrincipalArn": exempt},
        },
    }));
    explained.push("NoImdsV1AfterLaunch: a ModifyInstanceMetadataOptions that sets HttpTokens to anything but required is denied (the guard's own fix sets required, and one that leaves HttpTokens out is not this statement's)".into());
    // 4. Weakening the account default.
    statements.push(json!({
        "Sid": "KeepTheAccountDefault",
        "Effect": "Deny",
        "Action": "ec2:ModifyInstanceMetadataDefaults",
        "Resource": "*",
        "Condition": {
            "StringNotEquals": {"ec2:Attribute/HttpTokens": "required"},
            "Null": {"ec2:Attribute/HttpTokens": "false"},
            "ArnNotLike": {"aws:PrincipalArn": admins},
        },
    }));
    statements.push(json!({
        "Sid": "KeepHttpTokensEnforced",
        "Effect": "Deny",
        "Action": "ec2:ModifyInstanceMetadataDefaults",
        "Resource": "*",
        "Condition": {
            "StringNotEquals": {"ec2:Attribute/HttpTokensEnforced": "enabled"},
            "Null": {"ec2:Attribute/HttpTokensEnforced": "false"},
            "ArnNotLike": {"aws:PrincipalArn": admins},
        },
    }));
    explained.push("KeepTheAccountDefault, KeepHttpTokensEnforced: setting the account default's HttpTokens to anything but required, or HttpTokensEnforced to anything but enabled, is denied except by the administrator role".into());
    notes.push("ModifyInstanceMetadataDefaults: AWS lists ec2:Attribute/${AttributeName} for it, but does not document that EC2 fills ec2:Attribute/HttpTokensEnforced: until a DryRun in your account shows it denied, treat KeepHttpTokensEnforced as unproven".into());
    // 5. The guard's tags.
    let mut tag_keys = vec![i.status_tag_key.clone()];
    tag_keys.extend(i.exempt_tag_key.clone());
    let tag_keys = sorted(&tag_keys);
    if i.guard_roles.is_empty() {
        notes.push(format!(
            "the guard's tags ({}) are not protected: name the guard's roles (--guard-role, its stack's GuardRole and member roles) so they alone may write them",
            tag_keys.join(", ")
        ));
    } else {
        let writers = sorted(
            &i.guard_roles
                .iter()
                .chain(&i.platform_roles)
                .chain(&i.admin_roles)
                .cloned()
                .collect::<Vec<_>>(),
        );
        statements.push(json!({
            "Sid": "ProtectTheGuardsTags",
            "Effect": "Deny",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags", "ec2:RunInstances"],
            "Resource": instance,
            "Condition": {
                "ForAnyValue:StringEquals": {"aws:TagKeys": tag_keys},
                "ArnNotLike": {"aws:PrincipalArn": writers},
            },
        }));
        // `DeleteTags` naming no tag deletes them all, with no
        // `aws:TagKeys` to match.
        statements.push(json!({
            "Sid": "ProtectTheGuardsTagsFromDeleteAll",
            "Effect": "Deny",
            "Action": "ec2:DeleteTags",
            "Resource": instance,
            "Condition": {
                "Null": {"aws:TagKeys": "true"},
                "ArnNotLike": {"aws:PrincipalArn": writers},
            },
        }));
        statements.push(json!({
            "Sid": "ProtectTheGuardsTagsOnGroups",
            "Effect": "Deny",
            "Action": [
                "autoscaling:CreateAutoScalingGroup",
                "autoscaling:CreateOrUpdateTags",
                "autoscaling:DeleteTags",
            ],
            "Resource": "*",
            "Condition": {
                "ForAnyValue:StringEquals": {"aws:TagKeys": tag_keys},
                "ArnNotLike": {"aws:PrincipalArn": writers},
            },
        }));
        explained.push(format!(
            "ProtectTheGuardsTags(OnGroups): writing or removing {} on an instance (at launch too) or an Auto Scaling group is denied except by {}",
            tag_keys.join(", "),
            writers.join(", ")
        ));
        notes.push("a launch template's tag specifications are invisible to IAM (CreateLaunchTemplateVersion has no tag keys): a template may still carry the guard's tags to instances Auto Scaling launches; the guard's sweep reads templates (FIX_SOURCES)".into());
    }
    // 6. Credentials IMDSv1 delivered (AWS's transition guide).
    if i.role_delivery {
        statements.push(json!({
            "Sid": "RefuseImdsV1DeliveredCredentials",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"NumericLessThan": {"ec2:RoleDelivery": "2.0"}},
        }));
        explained.push("RefuseImdsV1DeliveredCredentials: every AWS call made with instance-role credentials that IMDSv1 delivered is denied (stolen IMDSv1 credentials become useless; so does any software still fetching them over IMDSv1)".into());
    }
    for g in &i.admin_roles {
        if g.contains(['*', '?']) {
            notes.push(format!(
                "{g}: IAM's `*` in a role ARN also matches roles on deeper paths"
            ));
        }
    }
    if kind == Kind::Scp {
        notes.push("an SCP does not bind the organization's management account: set its account default and HttpTokensEnforced there (imds-guard's SET_ACCOUNT_DEFAULT, or the declarative policy)".into());
        notes.push("an SCP does not bind service-linked roles: Auto Scaling's, Spot Fleet's and EC2 Fleet's launches are not denied; the declarative policy (--kind declarative) and HttpTokensEnforced cover them, and the guard fixes what they launch".into());
    } else {
        notes.push("an identity policy binds only the users and roles it is attached to: attach it to each that may launch (a role without it launches at optional freely); the account default and HttpTokensEnforced bind everyone".into());
    }
    if !i.exempt_images.is_empty() {
        notes.push(format!(
            "EXEMPT_IMAGE_IDS ({}) cannot be carried over: an AMI is no condition key of the instance resource, so launches from them at optional are denied for everyone this policy binds; exempt the principals that launch them, or keep their accounts out of the policy's unit",
            i.exempt_images.join(", ")
        ));
    }
    let policy = json!({"Version": "2012-10-17", "Statement": statements});
    let text = minified(&policy);
    let (limit, counted, what) = match kind {
        Kind::Scp => (SCP_LIMIT, text.chars().count(), "an SCP's 5,120 characters"),
        _ => (
            IAM_LIMIT,
            text.chars().filter(|c| !c.is_whitespace()).count(),
            "a managed policy's 6,144 characters (whitespace not counted)",
        ),
    };
    if counted > limit {
        return Err(format!(
            "the policy is {counted} characters, over {what}: fewer exempt principals (EXEMPT_PRINCIPAL_ARNS: {}; an account `*` covers many accounts in one entry) or roles",
            i.exempt_principals.len()
        ));
    }
    Ok(Printed {
        policy: text,
        notes,
        explained,
    })
}

/// The EC2 declarative policy: the account default, as the Organizations
/// guide's instance metadata defaults example writes it.
fn declarative(i: &Inputs) -> Result<Printed, String> {
    let mut defaults = Map::new();
    defaults.insert("http_tokens".into(), json!({"@@assign": "required"}));
    let policy = json!({"ec2_attributes": {"instance_metadata_defaults": defaults}});
    let text = minified(&policy);
    if text.chars().count() > DECLARATIVE_LIMIT {
        return Err(format!("the policy is over {DECLARATIVE_LIMIT} characters"));
    }
    let mut notes = vec![
        format!("MAX_HOP_LIMIT is a ceiling, not a default: the declarative policy leaves the hop limit's default as it is{}", i.max_hop_limit.map(|m| format!(" (the SCP caps it at {m})")).unwrap_or_default()),
        format!("shape as the AWS Organizations guide's \"Instance metadata defaults\" example ({DECLARATIVE_GUIDE})"),
        "HttpTokensEnforced is not an attribute that guide documents for the declarative policy: turn it on per account and region (ModifyInstanceMetadataDefaults --http-tokens-enforced enabled) once each is ready".into(),
        "a declarative policy sets the default only: a launch that asks for HttpTokens=optional still gets it (the SCP, HttpTokensEnforced and the guard cover that), and running instances are unchanged".into(),
    ];
    if i.role_delivery {
        notes.push("--with-role-delivery: a declarative policy cannot carry an IAM statement: use --kind scp".into());
    }
    Ok(Printed {
        policy: text,
        notes,
        explained: vec!["instance_metadata_defaults: new launches default to HttpTokens=required; the accounts' own administrators cannot change the default".into()],
    })
}

/// Sorted and without repeats: the same settings print the same text.
fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v.dedup();
    v
}

/// One line, no spaces between tokens. Statements and keys are built in a
/// fixed order and lists sorted, so the text is a function of the settings
/// alone.
fn minified(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Whether the last mile's evidence allows `--with-role-delivery`: a
/// sweep's JSON report (`imds-guard sweep --output json`, or the stack's)
/// read for what CloudTrail showed. Refused where software was seen using
/// IMDSv1-delivered credentials (it would break), or where nothing was
/// measured; otherwise the blind spots, for stderr. Absence of evidence is
/// never proof: every answer lists what was not looked at.
pub fn role_delivery_evidence(report: &Value) -> Result<Vec<String>, String> {
    let Some(regions) = report["sweep"]["regions"].as_array() else {
        return Err("the evidence is not a sweep's JSON report (no sweep.regions): run `imds-guard sweep --output json` with LOOKUP_IMDSV1_CALLERS=true and pass its file".into());
    };
    let mut blind = vec![
        "not seen by the last mile anywhere: data events (S3 objects, DynamoDB items), calls older than the lookback (at most 90 days), accounts and regions not in this report".to_string(),
    ];
    let mut users = Vec::new();
    let mut asked = 0;
    for r in regions {
        let place = match r["account"].as_str() {
            Some(a) => format!("{a}/{}", r["region"].as_str().unwrap_or("?")),
            None => r["region"].as_str().unwrap_or("?").to_string(),
        };
        let Some(m) = r.get("imdsv1_callers").filter(|m| m.is_object()) else {
            blind.push(format!("{place}: CloudTrail was not asked (LOOKUP_IMDSV1_CALLERS off, or the region not swept to the end)"));
            continue;
        };
        asked += m["asked"].as_u64().unwrap_or(0);
        let not_asked = m["not_asked"].as_u64().unwrap_or(0);
        if not_asked > 0 {
            blind.push(format!("{place}: {not_asked} instance(s) left at optional not asked yet (a later run asks them)"));
        }
        if m["errors"].as_array().is_some_and(|e| !e.is_empty()) {
            blind.push(format!(
                "{place}: CloudTrail's answers were cut short (imdsv1_callers.errors)"
            ));
        }
        for i in m["instances"].as_array().into_iter().flatten() {
            let id = i["instance_id"].as_str().unwrap_or("?");
            // `InstanceCallers` flattens what was seen into the instance.
            if i["partial"].as_bool() == Some(true) {
                blind.push(format!("{place}: {id}'s events were not all read"));
            }
            if i["unread"].as_u64().is_some_and(|n| n > 0) {
                blind.push(format!("{place}: some of {id}'s records could not be read"));
            }
            for c in i["callers"].as_array().into_iter().flatten() {
                users.push(format!(
                    "{place} {id}: {} (role {})",
                    c["agent"].as_str().unwrap_or("?"),
                    c["role"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    if !users.is_empty() {
        let shown = users.len().min(20);
        return Err(format!(
            "refused: software still uses IMDSv1-delivered credentials, and this statement would break it: {}{}. Upgrade or reconfigure it (see its hypothesis in the sweep report), then sweep again",
            users[..shown].join("; "),
            if users.len() > shown { format!("; and {} more", users.len() - shown) } else { String::new() }
        ));
    }
    if asked == 0 {
        return Err("refused: IMDSv1-delivered credential use not measured: CloudTrail was asked about no instance in this report (run the sweep with LOOKUP_IMDSV1_CALLERS=true; a region whose first call was throttled asked none)".into());
    }
    Ok(blind)
}

/// What EC2 answered one dry-run launch (`RunInstances`, `DryRun=true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `DryRunOperation`: it would have launched.
    Would,
    /// `UnauthorizedOperation` (a policy refused it) or
    /// `UnsupportedOperation` (`HttpTokensEnforced` did).
    Refused,
    /// Anything else (a bad image or subnet, throttling, ...), said.
    Other(String),
}

/// `doctor --prevention`'s row for one account-region, from dry-run
/// launches as the person running it: one asking for `HttpTokens=optional`
/// (what an SCP and `HttpTokensEnforced` must refuse), one asking for
/// `required`, and one without metadata options (said, not judged: the
/// image's `ImdsSupport` and the account default decide what it gets). The
/// guard's roles cannot launch at all, so only a person's own launch shows
/// whether prevention binds them.
pub fn dry_run_row(
    place: &str,
    optional: &Launch,
    required: &Launch,
    without: &Launch,
) -> crate::doctor::Row {
    use crate::doctor::{Row, Section};
    use crate::probe::Status;
    let check = "a launch asking for IMDSv1 is refused to you";
    let also = match without {
        Launch::Would => "; one without metadata options would launch (with what its image and the account default give it)".to_string(),
        Launch::Refused => "; one without metadata options was refused too".to_string(),
        Launch::Other(e) => format!("; one without metadata options: {e}"),
    };
    let row = |status, detail: String| Row::new(Section::Prevention, status, check, place, detail);
    match (optional, required) {
        (Launch::Refused, Launch::Would) => row(
            Status::Pass,
            format!("in force for you: a launch asking for HttpTokens=optional was refused, one with HttpTokens=required would launch (DryRunOperation){also}"),
        ),
        (Launch::Would, Launch::Would) => row(
            Status::Warn,
            format!("no prevention binds you here: a launch asking for HttpTokens=optional would launch{also}"),
        )
        .fix("attach the policy `imds-guard policy --kind scp` prints (or `--kind iam` outside an organization), then `imds-guard enforce-native` where `imds-guard plan` says ready"),
        (_, Launch::Refused) => row(
            Status::Warn,
            "inconclusive: even a launch with HttpTokens=required was refused to you (UnauthorizedOperation): you may not launch this image, type or subnet here at all".into(),
        )
        .fix("run it as a principal that may launch (or pass --image-id, --subnet-id, --instance-type it may use)"),
        (Launch::Other(e), _) | (_, Launch::Other(e)) => row(
            Status::Warn,
            format!("not checked: EC2 answered the dry run with {e}"),
        )
        .fix("pass --image-id and --subnet-id that exist in this region"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_launch_says_whether_prevention_binds_the_person() {
        use crate::probe::Status;
        let (w, r) = (Launch::Would, Launch::Refused);
        let row =
            |a: &Launch, b: &Launch, c: &Launch| dry_run_row("111122223333 us-east-1", a, b, c);
        assert_eq!(row(&r, &w, &w).status, Status::Pass);
        assert!(row(&r, &w, &w)
            .detail
            .contains("one without metadata options would launch"));
        let open = row(&w, &w, &w);
        assert_eq!(open.status, Status::Warn);
        assert!(
            open.detail.starts_with("no prevention binds you"),
            "{}",
            open.detail
        );
        assert!(open.fix.unwrap().contains("imds-guard policy --kind scp"));
        assert!(row(&r, &r, &r).detail.starts_with("inconclusive"));
        let other = row(&Launch::Other("InvalidAMIID.NotFound".into()), &w, &w);
        assert_eq!(other.status, Status::Warn);
        assert!(other.detail.contains("InvalidAMIID.NotFound"));
    }
}
