//! Central mode: acting in member accounts. The function assumes the member
//! role (`arn:<partition>:iam::<account>:role/<MEMBER_ROLE_NAME>`) with STS
//! and keeps the credentials per account and region until shortly before
//! they expire; events of its own account need no role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;
use tracing::info;

use super::api::Account;
use super::counter::CallCounter;
use super::error::AwsError;
use crate::config::MemberRole;

/// Credentials are renewed when less than this is left of them: more than
/// the longest call made with them (a sweep's page, 240 s at most).
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials are kept at least this long after they were issued, even if
/// by this function's clock they already look due: a clock that disagrees
/// with STS's must not turn every call into an AssumeRole (and STS throttling).
pub const MIN_REUSE: Duration = Duration::from_secs(60);
/// Shown in the member account's CloudTrail as the session that acted.
pub const SESSION_NAME: &str = "imds-guard";

/// Where STS clients come from: one per region (STS's regional endpoints,
/// so a region's events do not depend on another region), or one fixed
/// client for tests.
enum Sts {
    PerRegion {
        base: Box<SdkConfig>,
        clients: Mutex<HashMap<String, aws_sdk_sts::Client>>,
    },
    Fixed(aws_sdk_sts::Client),
}

/// Credentials, and when to renew them.
type Slot = Arc<tokio::sync::Mutex<Option<(Credentials, SystemTime)>>>;

pub struct MemberRoles {
    role: MemberRole,
    sts: Sts,
    counter: CallCounter,
    /// One slot per (account, region, session): callers for the same key
    /// wait for one AssumeRole instead of each sending their own.
    slots: Mutex<HashMap<(String, String, &'static str), Slot>>,
    home: tokio::sync::OnceCell<String>,
    home_region: String,
    clock: Option<aws_smithy_async::time::SharedTimeSource>,
}

impl MemberRoles {
    /// STS clients are built from `base` (its credentials are the function's
    /// own), one per region on first use, counted by `counter`.
    pub fn new(role: MemberRole, base: SdkConfig, counter: CallCounter) -> Self {
        let home_region = base
            .region()
            .map(|r| r.as_ref().to_string())
            .unwrap_or_else(|| "us-east-1".into());
        MemberRoles {
            role,
            clock: base.time_source(),
            sts: Sts::PerRegion {
                base: Box::new(base),
                clients: Mutex::new(HashMap::new()),
            },
            counter,
            slots: Mutex::new(HashMap::new()),
            home: tokio::sync::OnceCell::new(),
            home_region,
        }
    }

    /// One STS client for every region (tests: a mocked client), and a clock.
    pub fn with_client(
        role: MemberRole,
        sts: aws_sdk_sts::Client,
        clock: Option<aws_smithy_async::time::SharedTimeSource>,
    ) -> Self {
        MemberRoles {
            role,
            sts: Sts::Fixed(sts),
            counter: CallCounter::default(),
            slots: Mutex::new(HashMap::new()),
            home: tokio::sync::OnceCell::new(),
            home_region: "us-east-1".into(),
            clock,
        }
    }

    pub fn role(&self) -> &MemberRole {
        &self.role
    }

    fn now(&self) -> SystemTime {
        self.clock
            .as_ref()
            .map_or_else(SystemTime::now, |c| c.now())
    }

    fn sts(&self, region: &str) -> aws_sdk_sts::Client {
        match &self.sts {
            Sts::Fixed(c) => c.clone(),
            Sts::PerRegion { base, clients } => {
                let mut map = clients.lock().unwrap_or_else(|p| p.into_inner());
                map.entry(region.to_string())
                    .or_insert_with(|| {
                        let conf = aws_sdk_sts::config::Builder::from(&**base)
                            .region(Region::new(region.to_string()))
                            .interceptor(self.counter.clone())
                            .build();
                        aws_sdk_sts::Client::from_conf(conf)
                    })
                    .clone()
            }
        }
    }

    /// The function's own account, asked of STS once (`GetCallerIdentity`
    /// needs no permission).
    pub async fn home_account(&self) -> Result<&str, AwsError> {
        self.home
            .get_or_try_init(|| async {
                let out = self
                    .sts(&self.home_region)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::classify(e, "sts", "sts:GetCallerIdentity"))?;
                out.account()
                    .filter(|a| crate::validate::is_account_id(a))
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::Api {
                        code: "NoAccount".into(),
                        message: "GetCallerIdentity named no account".into(),
                    })
            })
            .await
            .map(String::as_str)
    }

    /// Which credentials act in `account` (none named: the function's own),
    /// assuming the member role there if need be. The error names the role.
    pub async fn enter(&self, account: Option<&str>, region: &str) -> Result<Account, AwsError> {
        self.enter_as(account, region, SESSION_NAME).await
    }

    /// As `enter`, in the role-session `session` (the self-check's own:
    /// `Account::Probe`).
    pub async fn enter_as(
        &self,
        account: Option<&str>,
        region: &str,
        session: &'static str,
    ) -> Result<Account, AwsError> {
        let Some(account) = account else {
            return Ok(Account::Home);
        };
        if self.home_account().await? == account {
            return Ok(Account::Home);
        }
        self.credentials_as(account, region, session).await?;
        Ok(if session == SESSION_NAME {
            Account::Member(account.to_string())
        } else {
            Account::Probe(account.to_string())
        })
    }

    /// The member role's credentials for `account` in `region`: cached, and
    /// renewed once less than `REFRESH_BEFORE_EXPIRY` is left of them.
    pub async fn credentials(&self, account: &str, region: &str) -> Result<Credentials, AwsError> {
        self.credentials_as(account, region, SESSION_NAME).await
    }

    /// As `credentials`, in the role-session `session`.
    pub async fn credentials_as(
        &self,
        account: &str,
        region: &str,
        session: &'static str,
    ) -> Result<Credentials, AwsError> {
        let slot: Slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry((account.to_string(), region.to_string(), session))
                .or_default()
                .clone()
        };
        let mut cached = slot.lock().await;
        let now = self.now();
        if let Some((c, renew_at)) = cached.as_ref() {
            if now < *renew_at {
                return Ok(c.clone());
            }
        }
        let renewing = cached.is_some();
        let creds = self.assume(account, region, session).await?;
        let renew_at = creds
            .expiry()
            .and_then(|e| e.checked_sub(REFRESH_BEFORE_EXPIRY))
            .unwrap_or(now)
            .max(now + MIN_REUSE);
        info!(%account, %region, %session, renewing, "assumed the member role");
        *cached = Some((creds.clone(), renew_at));
        Ok(creds)
    }

    async fn assume(
        &self,
        account: &str,
        region: &str,
        session: &str,
    ) -> Result<Credentials, AwsError> {
        let arn = self.role.arn(account, region);
        let out = self
            .sts(region)
            .assume_role()
            .role_arn(&arn)
            .role_session_name(session)
            .set_external_id(self.role.external_id.clone())
            .send()
            .await
            .map_err(|e| AwsError::classify(e, "sts", "sts:AssumeRole"))
            .map_err(|e| e.assuming(&arn))?;
        let c = out.credentials().ok_or_else(|| AwsError::Api {
            code: "NoCredentials".into(),
            message: format!("AssumeRole {arn} returned no credentials"),
        })?;
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            SystemTime::try_from(*c.expiration()).ok(),
            "imds-guard member role",
        ))
    }

    /// A credentials provider for clients acting in `account` and `region`
    /// in the role-session `session`.
    pub fn provider(
        self: &Arc<Self>,
        account: &str,
        region: &str,
        session: &'static str,
    ) -> MemberCredentials {
        MemberCredentials {
            roles: Arc::clone(self),
            account: account.to_string(),
            region: region.to_string(),
            session,
        }
    }
}

/// Hands a client the member role's current credentials, from the cache.
#[derive(Clone)]
pub struct MemberCredentials {
    roles: Arc<MemberRoles>,
    account: String,
    region: String,
    session: &'static str,
}

impl std::fmt::Debug for MemberCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberCredentials")
            .field("account", &self.account)
            .field("region", &self.region)
            .finish()
    }
}

impl ProvideCredentials for MemberCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.roles
                .credentials_as(&self.account, &self.region, self.session)
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

/// Which credentials act in `account`, in the member role's session
/// `session` when there are member roles; the function's own otherwise.
pub async fn enter_as(
    members: Option<&MemberRoles>,
    account: Option<&str>,
    region: &str,
    session: &'static str,
) -> Result<Account, AwsError> {
    match members {
        Some(m) => m.enter_as(account, region, session).await,
        None => Ok(Account::Home),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::BehaviorVersion;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_sdk_sts::error::ErrorMetadata;
    use aws_sdk_sts::operation::assume_role::{AssumeRoleError, AssumeRoleOutput};
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput;
    use aws_smithy_async::time::{SharedTimeSource, TimeSource};
    use aws_smithy_mocks::{
        create_mock_http_client, mock, MockResponseInterceptor, Rule, RuleMode,
    };

    const HOME: &str = "999999999999";
    const MEMBER: &str = "111111111111";

    /// A clock the test moves by hand.
    #[derive(Debug, Clone)]
    struct Clock(Arc<Mutex<SystemTime>>);

    impl Clock {
        fn start() -> Self {
            Clock(Arc::new(Mutex::new(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            )))
        }
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl TimeSource for Clock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap()
        }
    }

    fn role() -> MemberRole {
        MemberRole {
            name: "imds-guard-member".into(),
            external_id: Some("ext-42".into()),
        }
    }

    /// AssumeRole that hands out credentials valid for an hour from `clock`'s now.
    fn assume_ok(clock: &Clock) -> Rule {
        let clock = clock.clone();
        mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(|r| {
                r.role_session_name() == Some(SESSION_NAME) && r.external_id() == Some("ext-42")
            })
            .then_output(move || {
                let expires = clock.now() + Duration::from_secs(3600);
                AssumeRoleOutput::builder()
                    .credentials(
                        aws_sdk_sts::types::Credentials::builder()
                            .access_key_id("ASIAMEMBER")
                            .secret_access_key("secret")
                            .session_token("token")
                            .expiration(aws_sdk_sts::primitives::DateTime::from(expires))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
    }

    fn whoami() -> Rule {
        mock!(aws_sdk_sts::Client::get_caller_identity)
            .then_output(|| GetCallerIdentityOutput::builder().account(HOME).build())
    }

    fn sts(rules: &[&Rule]) -> aws_sdk_sts::Client {
        let mut i = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
        for r in rules {
            i = i.with_rule(r);
        }
        let base = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .http_client(create_mock_http_client())
            .build();
        aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&base)
                .interceptor(i)
                .build(),
        )
    }

    fn roles(rules: &[&Rule], clock: &Clock) -> MemberRoles {
        MemberRoles::with_client(
            role(),
            sts(rules),
            Some(SharedTimeSource::new(clock.clone())),
        )
    }

    #[tokio::test]
    async fn the_own_account_needs_no_role_and_a_member_one_is_assumed_once() {
        let clock = Clock::start();
        let (assume, who) = (assume_ok(&clock), whoami());
        let roles = roles(&[&assume, &who], &clock);
        assert_eq!(roles.enter(None, "us-east-1").await.unwrap(), Account::Home);
        assert_eq!(
            roles.enter(Some(HOME), "us-east-1").await.unwrap(),
            Account::Home
        );
        assert_eq!(assume.num_calls(), 0, "no role for the own account");
        for _ in 0..3 {
            assert_eq!(
                roles.enter(Some(MEMBER), "us-east-1").await.unwrap(),
                Account::Member(MEMBER.into())
            );
        }
        assert_eq!(assume.num_calls(), 1, "cached across calls");
        assert_eq!(who.num_calls(), 1, "the own account is asked once");
        // Another region of the same account: its own credentials.
        roles.enter(Some(MEMBER), "eu-west-1").await.unwrap();
        assert_eq!(assume.num_calls(), 2);
    }

    #[tokio::test]
    async fn credentials_are_renewed_shortly_before_they_expire() {
        let clock = Clock::start();
        let (assume, who) = (assume_ok(&clock), whoami());
        let roles = roles(&[&assume, &who], &clock);
        let first = roles.credentials(MEMBER, "us-east-1").await.unwrap();
        // 54 minutes in, 6 are left: still fresh.
        clock.advance(Duration::from_secs(54 * 60));
        let same = roles.credentials(MEMBER, "us-east-1").await.unwrap();
        assert_eq!(assume.num_calls(), 1);
        assert_eq!(same.expiry(), first.expiry());
        // 4 minutes left: inside the margin, renewed.
        clock.advance(Duration::from_secs(2 * 60));
        let renewed = roles.credentials(MEMBER, "us-east-1").await.unwrap();
        assert_eq!(assume.num_calls(), 2);
        assert!(renewed.expiry() > first.expiry());
        // And long expired (a process that slept through it): renewed again.
        clock.advance(Duration::from_secs(5 * 3600));
        roles.credentials(MEMBER, "us-east-1").await.unwrap();
        assert_eq!(assume.num_calls(), 3);
    }

    #[tokio::test]
    async fn credentials_that_look_due_on_arrival_are_kept_a_minute_not_assumed_per_call() {
        // STS's clock says an hour; ours runs two hours ahead of it.
        let sts_clock = Clock::start();
        let ours = Clock::start();
        ours.advance(Duration::from_secs(2 * 3600));
        let (assume, who) = (assume_ok(&sts_clock), whoami());
        let roles = roles(&[&assume, &who], &ours);
        for _ in 0..5 {
            roles.credentials(MEMBER, "us-east-1").await.unwrap();
        }
        assert_eq!(assume.num_calls(), 1);
        ours.advance(MIN_REUSE);
        roles.credentials(MEMBER, "us-east-1").await.unwrap();
        assert_eq!(assume.num_calls(), 2, "renewed after the minute");
    }

    #[tokio::test]
    async fn callers_at_once_share_one_assume_role() {
        let clock = Clock::start();
        let (assume, who) = (assume_ok(&clock), whoami());
        let roles = roles(&[&assume, &who], &clock);
        let all =
            futures_util::future::join_all((0..8).map(|_| roles.credentials(MEMBER, "us-east-1")))
                .await;
        assert!(all.iter().all(Result::is_ok));
        assert_eq!(assume.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_refused_assume_role_names_the_role_and_is_not_cached() {
        let clock = Clock::start();
        let denied = mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            AssumeRoleError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("User: arn:aws:sts::999999999999:assumed-role/guard/fn is not authorized to perform: sts:AssumeRole")
                    .build(),
            )
        });
        let who = whoami();
        let roles = roles(&[&denied, &who], &clock);
        let e = roles.enter(Some(MEMBER), "us-east-1").await.unwrap_err();
        assert!(e.is_unauthorized());
        let text = e.to_string();
        assert!(
            text.starts_with(
                "could not assume arn:aws:iam::111111111111:role/imds-guard-member: AccessDenied"
            ),
            "{text}"
        );
        assert!(text.contains("member stack deployed"), "{text}");
        roles.enter(Some(MEMBER), "us-east-1").await.unwrap_err();
        assert_eq!(denied.num_calls(), 2, "a refusal is asked again next time");
    }
}
