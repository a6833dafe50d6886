//! Every AWS call the function makes, behind small adapters that speak the
//! domain's types. The flows see only the traits of `api`; the SDK adapters
//! (`ec2`, `autoscaling`, `sns`, `sqs`, `cloudwatch`, `cloudtrail`, `memory`,
//! `roles`, `organizations`, `securityhub`, `eventbridge`, and `handoff`, the
//! outputs queue as Security Hub) implement them, and `clients` hands them
//! out per account and region. Errors are classified once, in `error`.
//!
//! Dependencies run one way: `api` and the adapters use `error` (and
//! `roles` the call `counter`); `clients` uses them all; none uses `clients`.

pub mod api;
pub mod autoscaling;
pub mod clients;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod counter;
pub mod ec2;
pub mod error;
pub mod eventbridge;
pub mod handoff;
pub mod memory;
pub mod organizations;
pub mod roles;
pub mod sdk;
pub mod securityhub;
pub mod sns;
pub mod sqs;

pub use api::{
    Account, AutoScalingApi, Clients, Ec2Api, EventsApi, FindingsApi, MemoryApi, MetricsApi, Page,
    Publisher, QueueApi, TrailApi,
};
pub use clients::RegionalClients;
pub use counter::CallCounter;
pub use error::AwsError;
pub use roles::{enter_as, MemberRoles};
pub use sdk::{load_sdk_config, page_timeouts, sdk_retry, sdk_timeouts};
