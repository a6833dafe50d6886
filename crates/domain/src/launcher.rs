//! Who launches and manages an instance or a launch template when it is not
//! a person: the launcher table (sources in docs/sources.md).
//!
//! Each launcher says whether its hosts run containers (their pods and
//! tasks reach IMDS one hop further), whether its templates are the
//! service's own copies (never edited: the service pins, regenerates or
//! overwrites them), whether its instances are the service's to set
//! (managed instances: never written), the setting a person changes for a
//! fix that lasts, and from which version it supports IMDSv2 only when not
//! every version does.
//!
//! A managed instance (`Operator`) is never written (`Policy::decide`); an
//! instance of a version-gated launcher shown by an unforgeable signal is
//! switched only once `MetadataNoToken` shows no IMDSv1 call (`plan`).
//!
//! A launcher is recognised by signals of four kinds, most trusted first
//! (`Trust`): the `Operator` field EC2 sets on a managed instance or
//! template; a template's `CreatedBy`, when it is a service-linked role's
//! session; an `aws:`-prefixed tag *key*, which only AWS sets (its *value*,
//! a group or stack name, is the creator's choice); and ordinary tags and
//! names, which anyone who may tag or name can forge. **A forgeable signal
//! chooses how to fix and what to tell; it never exempts an instance and
//! never holds one back.** Among signals of one kind, a service is named
//! before the stack or group that deployed it.

use serde::Serialize;

/// How far a signal can be believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// EC2's `Operator` field: the service manages it; no one else sets it.
    Operator,
    /// A template's `CreatedBy` is a service-linked role's session.
    CreatedBy,
    /// An `aws:`-prefixed tag key: only AWS sets those.
    AwsTag,
    /// An ordinary tag or a name: anyone who may tag or name can forge it.
    Forgeable,
}

impl Trust {
    /// Whether nobody but AWS can have set it.
    pub fn unforgeable(self) -> bool {
        self != Trust::Forgeable
    }
}

/// One row of the launcher table.
#[derive(Debug, PartialEq, Eq)]
pub struct Launcher {
    /// What a person calls it.
    pub name: &'static str,
    /// Its hosts run containers, whose pods or tasks reach IMDS one hop
    /// further than the host: at hop limit 1 with IMDSv1 off they get 401.
    pub containers: bool,
    /// Its launch templates are the service's own (a copy it pins, one it
    /// regenerates, or its stack's): never edited, even with `FIX_SOURCES`.
    pub owns_templates: bool,
    /// The service sets its instances' options (EC2 managed instances): the
    /// guard never writes to them.
    pub manages_instances: bool,
    /// Where the fix that lasts is made.
    pub setting: &'static str,
    /// The version from which it supports IMDSv2 only, when older ones
    /// need IMDSv1.
    pub since: Option<&'static str>,
}

macro_rules! launcher {
    ($id:ident, $name:expr, containers: $c:expr, owns: $o:expr, manages: $m:expr, setting: $s:expr, since: $v:expr) => {
        pub const $id: Launcher = Launcher {
            name: $name,
            containers: $c,
            owns_templates: $o,
            manages_instances: $m,
            setting: $s,
            since: $v,
        };
    };
}

launcher!(EKS_AUTO_MODE, "EKS Auto Mode", containers: true, owns: true, manages: true,
    setting: "none: EKS sets an Auto Mode node's options (its NodeClass has no hop limit)", since: None);
launcher!(ECS_MANAGED_INSTANCES, "ECS Managed Instances", containers: true, owns: true, manages: true,
    setting: "none: ECS sets a managed instance's options", since: None);
launcher!(LAMBDA_MANAGED_INSTANCES, "Lambda Managed Instances", containers: false, owns: true, manages: true,
    setting: "none: Lambda sets a managed instance's options", since: None);
launcher!(MANAGED_INSTANCE, "an EC2 managed instance", containers: false, owns: true, manages: true,
    setting: "none: the service that operates it sets its options", since: None);
launcher!(EKS_NODE_GROUP, "EKS managed node group", containers: true, owns: true, manages: false,
    setting: "the node group's own launch template (HttpTokens=required, HttpPutResponseHopLimit=2), rolled out with UpdateNodegroupVersion; a node group without one must be recreated with one",
    since: None);
launcher!(EKS, "Amazon EKS", containers: true, owns: true, manages: false,
    setting: "the nodes' launch template (HttpTokens=required, HttpPutResponseHopLimit=2)", since: None);
launcher!(KARPENTER, "Karpenter", containers: true, owns: true, manages: false,
    setting: "the EC2NodeClass's spec.metadataOptions (httpTokens: required, httpPutResponseHopLimit: 2)",
    since: None);
launcher!(EKSCTL, "eksctl", containers: true, owns: true, manages: false,
    setting: "disableIMDSv1: true on a new eksctl node group (an existing one cannot be changed)",
    since: None);
launcher!(ECS, "ECS capacity provider", containers: true, owns: false, manages: false,
    setting: "the capacity provider's launch template (HttpTokens=required, HttpPutResponseHopLimit=2), with an ECS agent from 2020 or later",
    since: Some("an ECS agent of 2020 or later (older agents fail at their next restart)"));
launcher!(BATCH, "AWS Batch", containers: true, owns: true, manages: false,
    setting: "the compute environment's launch template or the AL2023 image type, then an update or a new compute environment (Batch pins the version it copied)",
    since: None);
launcher!(EMR, "Amazon EMR", containers: false, owns: true, manages: false,
    setting: "an EMR security configuration with MinimumInstanceMetadataServiceVersion 2, on a new cluster",
    since: Some("EMR 5.32 or 6.2 (or 5.23.1, 5.27.1)"));
launcher!(BEANSTALK, "Elastic Beanstalk", containers: false, owns: true, manages: false,
    setting: "the environment's DisableIMDSv1 option (aws:autoscaling:launchconfiguration), on an Amazon Linux 2, AL2023 or Windows platform",
    since: Some("an Amazon Linux 2, AL2023 or Windows platform"));
launcher!(PARALLELCLUSTER, "AWS ParallelCluster", containers: false, owns: true, manages: false,
    setting: "Imds.ImdsSupport: v2.0 in the cluster configuration, on a new cluster",
    since: Some("ParallelCluster 3.3"));
launcher!(IMAGE_BUILDER, "EC2 Image Builder", containers: true, owns: true, manages: false,
    setting: "the infrastructure configuration's instanceMetadataOptions (httpTokens: required, httpPutResponseHopLimit: 2)",
    since: None);
launcher!(CLOUD9, "AWS Cloud9", containers: false, owns: true, manages: false,
    setting: "none at creation: Cloud9 has no setting, so its instance is switched", since: None);
launcher!(SPOT_FLEET, "Spot Fleet", containers: false, owns: false, manages: false,
    setting: "the fleet's launch template version", since: None);
launcher!(EC2_FLEET, "EC2 Fleet", containers: false, owns: false, manages: false,
    setting: "the fleet's launch template version", since: None);
launcher!(MGN, "Application Migration Service", containers: false, owns: false, manages: false,
    setting: "the launch template's default version (yours to edit)", since: None);
launcher!(DRS, "Elastic Disaster Recovery", containers: false, owns: false, manages: false,
    setting: "the launch template's default version (yours to edit)", since: None);
launcher!(BACKUP_RESTORE_TEST, "AWS Backup restore testing", containers: false, owns: false, manages: false,
    setting: "the restore testing plan's requireImdsV2 metadata override", since: None);
launcher!(SERVICE, "the service that created it", containers: false, owns: true, manages: false,
    setting: "that service's own setting", since: None);
launcher!(STACK, "CloudFormation stack", containers: false, owns: true, manages: false,
    setting: "the stack's template", since: None);

/// An instance's or a template's `Operator`, as EC2 shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operator {
    pub managed: bool,
    /// The service principal that operates it (`eks.amazonaws.com`).
    pub principal: Option<String>,
}

/// What an instance or a template shows of who made it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signals<'a> {
    pub operator: Option<&'a Operator>,
    /// A template's `CreatedBy`.
    pub created_by: Option<&'a str>,
    pub tags: &'a [(String, String)],
    /// A template's name.
    pub name: Option<&'a str>,
}

/// A launcher recognised, by what, and how far that can be believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recognised {
    pub launcher: &'static Launcher,
    pub trust: Trust,
    /// The signal, as a person can check it (`tag eks:nodegroup-name`).
    pub signal: String,
    /// What it names (a node group, a stack, a role), when it names one.
    pub detail: Option<String>,
}

impl Recognised {
    /// What a person reads: the launcher, and what it names.
    pub fn label(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} {d}", self.launcher.name),
            None => self.launcher.name.to_string(),
        }
    }

    fn new(launcher: &'static Launcher, trust: Trust, signal: String) -> Self {
        Recognised {
            launcher,
            trust,
            signal,
            detail: None,
        }
    }

    fn naming(mut self, detail: Option<&str>) -> Self {
        self.detail = detail
            .map(|d| crate::validate::clean(d, 128))
            .filter(|d| !d.is_empty());
        self
    }
}

/// Service-linked roles whose session creates a service's own template.
const SERVICE_ROLES: &[(&str, &Launcher)] = &[
    ("AWSServiceRoleForAmazonEKSNodegroup", &EKS_NODE_GROUP),
    ("AWSServiceRoleForBatch", &BATCH),
    ("AWSServiceRoleForECSCompute", &ECS_MANAGED_INSTANCES),
    ("AWSServiceRoleForApplicationMigrationService", &MGN),
    ("AWSServiceRoleForElasticDisasterRecovery", &DRS),
];

/// `aws:` tag keys (or key prefixes ending in `:`), a service before a
/// stack: the first found names the launcher.
const AWS_TAGS: &[(&str, &Launcher)] = &[
    ("aws:eks:cluster-name", &EKS),
    ("aws:batch:", &BATCH),
    ("aws:elasticmapreduce:", &EMR),
    ("aws:cloud9:", &CLOUD9),
    ("aws:ec2spot:fleet-request-id", &SPOT_FLEET),
    ("aws:ec2:fleet-id", &EC2_FLEET),
    ("aws:cloudformation:stack-name", &STACK),
];

/// Ordinary tag keys (or prefixes ending in `:`, `/` or `.`), a service
/// before a tool: the first found names the launcher.
const TAGS: &[(&str, &Launcher)] = &[
    ("eks:nodegroup-name", &EKS_NODE_GROUP),
    ("karpenter.sh/", &KARPENTER),
    ("karpenter.k8s.aws/", &KARPENTER),
    ("alpha.eksctl.io/", &EKSCTL),
    ("eks:", &EKS),
    ("AmazonECSManaged", &ECS),
    ("AWSBatchServiceTag", &BATCH),
    ("elasticbeanstalk:", &BEANSTALK),
    ("parallelcluster:", &PARALLELCLUSTER),
    ("Ec2ImageBuilderArn", &IMAGE_BUILDER),
    ("AWSApplicationMigrationServiceManaged", &MGN),
    ("AWSElasticDisasterRecoveryManaged", &DRS),
    ("awsbackup-restore-test", &BACKUP_RESTORE_TEST),
];

/// Template name prefixes of services' own copies.
const NAMES: &[(&str, &Launcher)] = &[
    ("Batch-lt-", &BATCH),
    ("karpenter.k8s.aws/", &KARPENTER),
    ("AWSEBEC2LaunchTemplate_", &BEANSTALK),
    ("eks-", &EKS_NODE_GROUP),
];

/// What a tag names, for a person: a node group's or a stack's name.
fn detail_of(key: &str, value: &str) -> Option<String> {
    matches!(key, "eks:nodegroup-name" | "aws:cloudformation:stack-name").then(|| value.to_string())
}

fn matches_key(pattern: &str, key: &str) -> bool {
    if pattern.ends_with([':', '/', '.']) {
        key.starts_with(pattern)
    } else {
        key == pattern
    }
}

/// Launchers that say how instances were deployed, not who runs them: a
/// service's signal is named before them.
fn deploys_only(l: &Launcher) -> bool {
    [&STACK, &SPOT_FLEET, &EC2_FLEET].contains(&l)
}

/// The launcher these signals show: the most trusted signal that names a
/// service, else the stack or fleet that deployed it.
pub fn recognise(s: &Signals<'_>) -> Option<Recognised> {
    best(recognise_all(s))
}

/// Of launchers shown (most trusted first), the one to name: the first that
/// names a service, else the stack or fleet that deployed it.
pub fn best(shown: impl IntoIterator<Item = Recognised>) -> Option<Recognised> {
    let shown: Vec<Recognised> = shown.into_iter().collect();
    let at = shown
        .iter()
        .position(|r| !deploys_only(r.launcher))
        .unwrap_or(0);
    // EKS's own `aws:` tag says only "EKS": a node group's or Karpenter's
    // tags on the same node say which, and where its fix is made (both run
    // containers, and neither holds anything back, so a forged one only
    // changes the words).
    let refined = shown.get(at).and_then(|r| {
        (r.launcher == &EKS)
            .then(|| {
                shown
                    .iter()
                    .position(|s| [&EKS_NODE_GROUP, &KARPENTER, &EKSCTL].contains(&s.launcher))
            })
            .flatten()
    });
    shown.into_iter().nth(refined.unwrap_or(at))
}

/// Every launcher these signals show, most trusted first (an EKS node
/// launched through a fleet, in a stack, shows all three).
pub fn recognise_all(s: &Signals<'_>) -> Vec<Recognised> {
    let mut out = Vec::new();
    if let Some(op) = s.operator.filter(|o| o.managed) {
        let principal = op.principal.as_deref().unwrap_or("");
        let launcher = match principal {
            "eks.amazonaws.com" => &EKS_AUTO_MODE,
            "ecs.amazonaws.com" | "ecs-compute.amazonaws.com" => &ECS_MANAGED_INSTANCES,
            "scaler.lambda.amazonaws.com" | "lambda.amazonaws.com" => &LAMBDA_MANAGED_INSTANCES,
            _ => &MANAGED_INSTANCE,
        };
        let signal = format!("Operator.Managed=true, Principal={principal}");
        let named = (launcher == &MANAGED_INSTANCE).then_some(principal);
        out.push(Recognised::new(launcher, Trust::Operator, signal).naming(named));
    }
    if let Some(by) = s.created_by.filter(|b| b.contains("AWSServiceRole")) {
        let role = by
            .split('/')
            .find(|p| p.starts_with("AWSServiceRole"))
            .unwrap_or(by);
        let known = SERVICE_ROLES.iter().find(|(r, _)| *r == role);
        let signal = format!("CreatedBy {role}");
        out.push(match known {
            Some((_, l)) => Recognised::new(l, Trust::CreatedBy, signal),
            None => Recognised::new(&SERVICE, Trust::CreatedBy, signal).naming(Some(role)),
        });
    }
    let mut by_tags = |table: &[(&str, &'static Launcher)], trust: Trust| {
        for (pattern, l) in table {
            if out.iter().any(|r: &Recognised| r.launcher == *l) {
                continue;
            }
            if let Some((key, value)) = s.tags.iter().find(|(k, _)| matches_key(pattern, k)) {
                let r = Recognised::new(l, trust, format!("tag {key}"));
                out.push(r.naming(detail_of(key, value).as_deref()));
            }
        }
    };
    by_tags(AWS_TAGS, Trust::AwsTag);
    by_tags(TAGS, Trust::Forgeable);
    if let Some(name) = s.name {
        let named = NAMES.iter().find(|(p, _)| {
            name.strip_prefix(p).is_some_and(|rest| {
                // EKS's and Batch's copies end in a UUID; Karpenter's and
                // Beanstalk's in a hash or random suffix.
                !matches!(*p, "eks-" | "Batch-lt-") || uuid_like(rest)
            })
        });
        if let Some((_, l)) = named {
            if !out.iter().any(|r| r.launcher == *l) {
                let shown = crate::validate::clean(name, 128);
                out.push(Recognised::new(
                    l,
                    Trust::Forgeable,
                    format!("name {shown}"),
                ));
            }
        }
    }
    out
}

/// `8-4-4-4-12` hex digits.
fn uuid_like(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn of(pairs: &[(&str, &str)]) -> Option<Recognised> {
        recognise(&Signals {
            tags: &tags(pairs),
            ..Signals::default()
        })
    }

    #[test]
    fn eks_is_refined_by_the_node_group_or_karpenter_that_made_the_node() {
        // A real node group's node: EKS's aws: tag and the group's own.
        let r = of(&[
            ("aws:eks:cluster-name", "evergreen"),
            ("eks:cluster-name", "evergreen"),
            ("eks:nodegroup-name", "ng-system"),
        ])
        .unwrap();
        assert_eq!(r.label(), "EKS managed node group ng-system");
        let r = of(&[
            ("aws:eks:cluster-name", "prod"),
            ("karpenter.sh/nodepool", "default"),
        ])
        .unwrap();
        assert_eq!(r.launcher, &KARPENTER);
        // Alone, it names EKS.
        assert_eq!(
            of(&[("aws:eks:cluster-name", "prod")]).unwrap().launcher,
            &EKS
        );
    }

    #[test]
    fn a_managed_instance_is_known_by_its_operator_before_anything_else() {
        for (principal, want) in [
            ("eks.amazonaws.com", &EKS_AUTO_MODE),
            ("ecs.amazonaws.com", &ECS_MANAGED_INSTANCES),
            ("scaler.lambda.amazonaws.com", &LAMBDA_MANAGED_INSTANCES),
            ("workspaces.amazonaws.com", &MANAGED_INSTANCE),
        ] {
            let op = Operator {
                managed: true,
                principal: Some(principal.into()),
            };
            let t = tags(&[("karpenter.sh/nodepool", "default")]);
            let r = recognise(&Signals {
                operator: Some(&op),
                tags: &t,
                ..Signals::default()
            })
            .unwrap();
            assert_eq!(r.launcher, want, "{principal}");
            assert_eq!(r.trust, Trust::Operator);
            assert!(r.launcher.manages_instances);
        }
        // Not managed: the operator field says nothing.
        let op = Operator {
            managed: false,
            principal: None,
        };
        let r = recognise(&Signals {
            operator: Some(&op),
            ..Signals::default()
        });
        assert_eq!(r, None);
    }

    #[test]
    fn a_service_linked_creator_names_its_service_and_mgn_templates_stay_the_users() {
        let eks = "arn:aws:sts::111122223333:assumed-role/AWSServiceRoleForAmazonEKSNodegroup/EKS";
        let r = recognise(&Signals {
            created_by: Some(eks),
            ..Signals::default()
        })
        .unwrap();
        assert_eq!((r.launcher, r.trust), (&EKS_NODE_GROUP, Trust::CreatedBy));
        let mgn = "arn:aws:sts::1:assumed-role/AWSServiceRoleForApplicationMigrationService/x";
        let r = recognise(&Signals {
            created_by: Some(mgn),
            ..Signals::default()
        })
        .unwrap();
        assert_eq!(r.launcher, &MGN);
        assert!(
            !r.launcher.owns_templates,
            "the durable fix is the user's template"
        );
        let other = "arn:aws:sts::1:assumed-role/AWSServiceRoleForSomethingNew/x";
        let r = recognise(&Signals {
            created_by: Some(other),
            ..Signals::default()
        })
        .unwrap();
        assert_eq!(
            r.label(),
            "the service that created it AWSServiceRoleForSomethingNew"
        );
        // A customer role is no signal.
        assert_eq!(
            recognise(&Signals {
                created_by: Some("arn:aws:iam::1:role/platform"),
                ..Signals::default()
            }),
            None
        );
    }

    #[test]
    fn every_launcher_the_table_names_is_recognised_with_the_trust_of_its_signal() {
        for (pairs, want, trust) in [
            (
                &[("aws:elasticmapreduce:job-flow-id", "j-1")][..],
                &EMR,
                Trust::AwsTag,
            ),
            (&[("aws:cloud9:environment", "e1")], &CLOUD9, Trust::AwsTag),
            (&[("aws:eks:cluster-name", "c")], &EKS, Trust::AwsTag),
            (
                &[("aws:batch:compute-environment", "ce")],
                &BATCH,
                Trust::AwsTag,
            ),
            (
                &[("aws:ec2spot:fleet-request-id", "sfr-1")],
                &SPOT_FLEET,
                Trust::AwsTag,
            ),
            (
                &[("aws:ec2:fleet-id", "fleet-1")],
                &EC2_FLEET,
                Trust::AwsTag,
            ),
            (
                &[("karpenter.sh/nodepool", "default")],
                &KARPENTER,
                Trust::Forgeable,
            ),
            (
                &[("karpenter.k8s.aws/ec2nodeclass", "default")],
                &KARPENTER,
                Trust::Forgeable,
            ),
            (
                &[("eks:nodegroup-name", "ng-1")],
                &EKS_NODE_GROUP,
                Trust::Forgeable,
            ),
            (&[("eks:cluster-name", "c")], &EKS, Trust::Forgeable),
            (
                &[("alpha.eksctl.io/nodegroup-name", "ng")],
                &EKSCTL,
                Trust::Forgeable,
            ),
            (&[("AmazonECSManaged", "")], &ECS, Trust::Forgeable),
            (&[("AWSBatchServiceTag", "batch")], &BATCH, Trust::Forgeable),
            (
                &[("elasticbeanstalk:environment-name", "prod")],
                &BEANSTALK,
                Trust::Forgeable,
            ),
            (
                &[("parallelcluster:cluster-name", "hpc")],
                &PARALLELCLUSTER,
                Trust::Forgeable,
            ),
            (
                &[("Ec2ImageBuilderArn", "arn:aws:imagebuilder:...")],
                &IMAGE_BUILDER,
                Trust::Forgeable,
            ),
            (
                &[("AWSApplicationMigrationServiceManaged", "")],
                &MGN,
                Trust::Forgeable,
            ),
            (
                &[("AWSElasticDisasterRecoveryManaged", "")],
                &DRS,
                Trust::Forgeable,
            ),
            (
                &[("awsbackup-restore-test", "")],
                &BACKUP_RESTORE_TEST,
                Trust::Forgeable,
            ),
            (
                &[("aws:cloudformation:stack-name", "web")],
                &STACK,
                Trust::AwsTag,
            ),
        ] {
            let r = of(pairs).unwrap_or_else(|| panic!("{pairs:?}"));
            assert_eq!((r.launcher.name, r.trust), (want.name, trust), "{pairs:?}");
            assert_eq!(r.trust.unforgeable(), trust != Trust::Forgeable);
        }
        assert_eq!(of(&[("team", "web"), ("Name", "eks-like")]), None);
    }

    #[test]
    fn the_service_is_named_before_the_stack_that_deployed_it() {
        for (service, want) in [
            (("elasticbeanstalk:environment-name", "prod"), &BEANSTALK),
            (("parallelcluster:cluster-name", "hpc"), &PARALLELCLUSTER),
            (("alpha.eksctl.io/cluster-name", "c"), &EKSCTL),
            (("aws:cloud9:environment", "e1"), &CLOUD9),
        ] {
            let r = of(&[
                ("aws:cloudformation:stack-name", "awseb-e-1-stack"),
                service,
            ])
            .unwrap();
            assert_eq!(r.launcher, want, "{service:?}");
        }
        // A stack alone names the stack.
        let r = of(&[("aws:cloudformation:stack-name", "web")]).unwrap();
        assert_eq!(r.label(), "CloudFormation stack web");
        let r = of(&[("eks:nodegroup-name", "ng-1")]).unwrap();
        assert_eq!(r.label(), "EKS managed node group ng-1");
    }

    #[test]
    fn a_services_copy_is_known_by_its_name_when_nothing_better_shows() {
        for (name, want) in [
            ("Batch-lt-0d8a7e2c-1b3f-4c5d-9e6f-0a1b2c3d4e5f", &BATCH),
            ("karpenter.k8s.aws/1234567890", &KARPENTER),
            ("AWSEBEC2LaunchTemplate_abcdefgh", &BEANSTALK),
            ("eks-5ebc5a35-5f45-4a2b-9c1d-0e2f3a4b5c6d", &EKS_NODE_GROUP),
        ] {
            let r = recognise(&Signals {
                name: Some(name),
                ..Signals::default()
            })
            .unwrap();
            assert_eq!((r.launcher, r.trust), (want, Trust::Forgeable), "{name}");
            assert!(r.launcher.owns_templates, "{name}");
        }
        for name in ["web-servers", "eks-workers", "Batch-lt-mine"] {
            assert_eq!(
                recognise(&Signals {
                    name: Some(name),
                    ..Signals::default()
                }),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn container_launchers_are_the_ones_whose_pods_and_tasks_need_a_second_hop() {
        let containers: Vec<&str> = [
            &EKS_AUTO_MODE,
            &ECS_MANAGED_INSTANCES,
            &EKS_NODE_GROUP,
            &EKS,
            &KARPENTER,
            &EKSCTL,
            &ECS,
            &BATCH,
            &IMAGE_BUILDER,
        ]
        .iter()
        .filter(|l| l.containers)
        .map(|l| l.name)
        .collect();
        assert_eq!(containers.len(), 9, "{containers:?}");
        for l in [&EMR, &BEANSTALK, &PARALLELCLUSTER, &SPOT_FLEET, &STACK] {
            assert!(!l.containers, "{}", l.name);
        }
    }

    #[test]
    fn a_node_launched_through_a_fleet_in_a_stack_is_its_services() {
        // The tags of a real EKS managed node group's instance
        // (events/real/run-instances-panther-1.json): Auto Scaling launched
        // it through a fleet; the node group is what runs it.
        let t = tags(&[
            ("k8s.io/cluster-autoscaler/enabled", "true"),
            ("aws:autoscaling:groupName", "eks-ng-0ca246e9-cac9e862"),
            (
                "aws:ec2:fleet-id",
                "fleet-180da986-0bb4-c936-0c9a-0e20a0c6d1aa",
            ),
            ("eks:cluster-name", "k8s-goat-cluster"),
            ("eks:nodegroup-name", "ng-0ca246e9"),
            ("alpha.eksctl.io/nodegroup-name", "ng-0ca246e9"),
        ]);
        let s = Signals {
            tags: &t,
            ..Signals::default()
        };
        let r = recognise(&s).unwrap();
        assert_eq!(r.label(), "EKS managed node group ng-0ca246e9");
        assert!(recognise_all(&s).iter().any(|r| r.launcher == &EC2_FLEET));
        // A fleet alone names the fleet.
        let r = of(&[("aws:ec2:fleet-id", "fleet-1")]).unwrap();
        assert_eq!(r.launcher, &EC2_FLEET);
        // A stack and a forgeable tag: both are shown, the service first.
        let t = tags(&[
            ("aws:cloudformation:stack-name", "web"),
            ("AmazonECSManaged", ""),
        ]);
        let all = recognise_all(&Signals {
            tags: &t,
            ..Signals::default()
        });
        assert_eq!(all.len(), 2);
        assert_eq!(
            of(&[
                ("aws:cloudformation:stack-name", "web"),
                ("AmazonECSManaged", "")
            ])
            .unwrap()
            .launcher,
            &ECS
        );
    }

    #[test]
    fn tag_text_is_cleaned_before_a_person_reads_it() {
        let r = of(&[("eks:nodegroup-name", "ng\u{1b}[31m-1")]).unwrap();
        assert!(!r.label().contains('\u{1b}'), "{}", r.label());
    }
}
