//! Any bytes as a Lambda payload: parsing never panics, and whatever it
//! reads, the policy and the notification keep their promises.
#![no_main]

use imds_guard_domain::config::{Config, Exemptions, Mode};
use imds_guard_domain::event::{self, GuardEvent, SourceChange, Trigger};
use imds_guard_domain::glob::Glob;
use imds_guard_domain::notify;
use imds_guard_domain::plan::plan;
use imds_guard_domain::policy::{Policy, Verdict};
use imds_guard_domain::report::{Outcome, Report, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let parsed = event::parse(&payload);
    // A source event that parses names what it is about, with ids EC2 and
    // Auto Scaling could have issued: those go into API calls and filters.
    if let Ok(GuardEvent::SourceChanged { ctx, change }) = &parsed {
        assert!(imds_guard_domain::validate::is_region(&ctx.region));
        match change {
            SourceChange::Template { id, name, .. } => {
                assert!(id.is_some() || name.is_some());
                if let Some(id) = id {
                    assert!(event::is_launch_template_id(id));
                }
            }
            SourceChange::Group { name, .. } => assert!(!name.is_empty()),
        }
    }
    let Ok(GuardEvent::Instances { ctx, instances, .. }) = parsed else {
        return;
    };
    assert!(imds_guard_domain::validate::is_region(&ctx.region));
    let exemptions = Exemptions {
        tag_key: Some("legacy-imds".into()),
        principals: vec![Glob::new("arn:aws:iam::*:role/legacy*")],
        image_ids: vec!["ami-0c02fb55956c7d316".into()],
    };
    let none = Exemptions::default();
    let mut reports = Vec::new();
    for o in &instances {
        assert!(imds_guard_domain::validate::is_instance_id(&o.instance_id));
        for (ex, max) in [(&exemptions, Some(2)), (&none, None)] {
            let policy = Policy {
                exemptions: ex,
                max_hop_limit: max,
                container_hop: 2,
                container_tag: Some("containers"),
                honour_migrated: true,
            };
            match policy.decide(o, &ctx.principal) {
                Verdict::Noncompliant { remedy, .. } => {
                    // The endpoint is never sent; a hop limit only to lower
                    // one above the ceiling to it, or to raise a container
                    // host switched from optional to 2, never above it.
                    assert_eq!(remedy.http_tokens, "required");
                    if let Some(sent) = remedy.http_put_response_hop_limit {
                        let hop = o
                            .options
                            .http_put_response_hop_limit
                            .expect("a hop limit is sent only when known");
                        if sent < hop {
                            assert_eq!(Some(sent), max);
                        } else {
                            assert!(sent > hop && sent == 2);
                            assert_ne!(o.options.http_tokens.as_deref(), Some("required"));
                            assert!(policy.container_host(o).is_some());
                        }
                    }
                }
                Verdict::Compliant => {
                    assert!(
                        o.options.http_endpoint.as_deref() == Some("disabled")
                            || o.options.http_tokens.as_deref() == Some("required")
                    );
                }
                _ => {}
            }
        }
        // The plan the function would act on: one report per instance, a
        // write planned only with a remedy, and a remedy only in enforce.
        let cfg = Config::default();
        let (mut r, remedy) = plan(&cfg, o, &ctx, Trigger::Launch);
        assert_eq!(r.instance_id, o.instance_id);
        assert_eq!(r.action.wrote(), remedy.is_some());
        assert_eq!(r.outcome == Outcome::Remediated, remedy.is_some());
        r.notify = true;
        reports.push(r);
    }
    let report = Report {
        status: Status::Handled,
        mode: Config::default().mode,
        reason: None,
        event: Some(ctx),
        instances: reports,
        unreadable: vec![],
        notification: String::new(),
        sweep: None,
        account_defaults: None,
        aws_calls: Default::default(),
        sources: vec![],
        security_hub: None,
        routed: None,
        breaker: None,
        fallback: None,
        release: imds_guard_domain::release::Release::THIS,
    };
    let _ = Mode::Audit;
    let n = notify::build(&report);
    assert!(n.subject.len() <= notify::MAX_SUBJECT);
    assert!(n.subject.chars().all(|c| c.is_ascii_graphic() || c == ' '));
    assert!(n.body.len() <= notify::MAX_BODY || report.instances.is_empty());
    let body: serde_json::Value = serde_json::from_str(&n.body).expect("the body is JSON");
    assert!(body.get("summary").is_some());
});
