//! AWS errors, classified once: what to retry, what is a missing permission
//! (named, never retried), what means the instance is gone.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// The function's role lacks a permission: retrying cannot help.
    #[error("{code}: the function's role is not allowed {permission} ({message})")]
    Unauthorized {
        code: String,
        permission: &'static str,
        message: String,
    },
    /// A service error, after the SDK's own retries.
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// No answer: connection refused or reset, timeout.
    #[error("no answer from {service}: {message}")]
    Transport {
        service: &'static str,
        message: String,
    },
    /// The member role could not be assumed (central mode).
    #[error("could not assume {role_arn}: {cause}{}", .cause.member_hint())]
    MemberRole {
        role_arn: String,
        cause: Box<AwsError>,
    },
}

impl AwsError {
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Unauthorized { code, .. } | AwsError::Api { code, .. } => Some(code),
            AwsError::Transport { .. } => None,
            AwsError::MemberRole { cause, .. } => cause.code(),
        }
    }

    /// This error, as met while assuming `role_arn`.
    pub fn assuming(self, role_arn: &str) -> AwsError {
        AwsError::MemberRole {
            role_arn: role_arn.to_string(),
            cause: Box::new(self),
        }
    }

    /// What a refused AssumeRole most often means, for the reader.
    fn member_hint(&self) -> &'static str {
        if self.is_unauthorized() {
            "; is the member stack deployed in that account, trusting this function's role (and external id)?"
        } else {
            ""
        }
    }

    /// EC2 does not show the instance yet (eventual consistency), or any more.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some("InvalidInstanceID.NotFound")
    }

    /// The instance is not in a state that accepts the change (`pending`).
    pub fn is_incorrect_state(&self) -> bool {
        self.code() == Some("IncorrectInstanceState")
    }

    /// EC2 (or another service) asks us to slow down, after the SDK's retries.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self.code(),
            Some(
                "RequestLimitExceeded"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "RequestThrottledException"
                    | "TooManyRequestsException"
            )
        )
    }

    /// The service answered that it does not take the request as asked
    /// (a filter or parameter it does not know, or an error it could not
    /// explain): an answer, unlike a missing permission, throttling, or no
    /// answer at all (network, credentials).
    pub fn is_refused_request(&self) -> bool {
        let AwsError::Api { code, .. } = self else {
            return false;
        };
        matches!(
            code.as_str(),
            "InvalidParameterValue"
                | "InvalidParameter"
                | "InvalidParameterCombination"
                | "InvalidFilter"
                | "UnknownParameter"
        ) || (code.starts_with("HTTP5") && code.len() == 7)
    }

    pub fn is_unauthorized(&self) -> bool {
        match self {
            AwsError::Unauthorized { .. } => true,
            AwsError::MemberRole { cause, .. } => cause.is_unauthorized(),
            _ => false,
        }
    }

    pub(crate) fn classify<E>(
        err: SdkError<E, HttpResponse>,
        service: &'static str,
        permission: &'static str,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        // A service answer EC2 could not explain (an HTML 500 from a proxy
        // or an emulator) is still an answer: name its status, not the
        // parser's complaint.
        if err.code().is_none() {
            if let SdkError::ServiceError(se) = &err {
                return AwsError::Api {
                    code: format!("HTTP{}", se.raw().status().as_u16()),
                    message: format!("{service} answered with an unreadable error response"),
                };
            }
        }
        // A member role's credentials that could not be had: say so, not
        // "no answer from ec2" (the provider's error is deep in the chain).
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            if let Some(e) = e.downcast_ref::<AwsError>() {
                return e.clone();
            }
            source = e.source();
        }
        let code = err.code().map(str::to_string);
        let message = err
            .message()
            .map(|m| crate::validate::clean(m, 300))
            .unwrap_or_else(|| crate::validate::clean(&DisplayErrorContext(&err).to_string(), 300));
        match code {
            Some(code)
                if code.contains("UnauthorizedOperation")
                    || code == "AccessDenied"
                    || code == "AuthorizationError"
                    || code == "AccessDeniedException" =>
            {
                // The encoded authorization message is long and opaque; keep
                // only its start, the permission is named for the reader.
                AwsError::Unauthorized {
                    code,
                    permission,
                    message: crate::validate::clean(&message, 120),
                }
            }
            Some(code) => AwsError::Api { code, message },
            None => AwsError::Transport { service, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_is_told_apart_from_other_errors() {
        let e = AwsError::Unauthorized {
            code: "UnauthorizedOperation".into(),
            permission: "ec2:CreateTags",
            message: "no".into(),
        };
        assert!(e.to_string().contains("not allowed ec2:CreateTags"));
        let nf = AwsError::Api {
            code: "InvalidInstanceID.NotFound".into(),
            message: String::new(),
        };
        assert!(nf.is_not_found() && !nf.is_incorrect_state());
        let t = AwsError::Transport {
            service: "ec2",
            message: "connection refused".into(),
        };
        assert_eq!(t.code(), None);
    }

    #[test]
    fn only_an_answer_refusing_the_request_counts_as_a_refusal() {
        let api = |code: &str| AwsError::Api {
            code: code.into(),
            message: String::new(),
        };
        assert!(api("InvalidParameterValue").is_refused_request());
        assert!(api("HTTP500").is_refused_request(), "the emulator's answer");
        for not in [
            api("RequestLimitExceeded"),
            api("UnauthorizedOperation"),
            api("HTTP5000"),
            AwsError::Transport {
                service: "ec2",
                message: "dispatch failure: no credentials".into(),
            },
        ] {
            assert!(!not.is_refused_request(), "{not:?}");
        }
    }
}
