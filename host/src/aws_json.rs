//! AWS JSON 1.1 calls (the ECS and KMS APIs) over [`SignedHttp`], with the retries and timeouts
//! of the process's `SdkConfig`.
//!
//! A call is `POST /` with `X-Amz-Target: <prefix>.<Operation>` and a JSON body; the answer is
//! JSON, or on failure `{"__type": "[namespace#]Code", "message": "..."}` with the request id in
//! `x-amzn-RequestId`. Failed attempts that AWS's standard retry mode retries (throttling,
//! 500/502/503/504, transport errors, attempt timeouts) are tried again after a jittered,
//! doubling backoff, up to the configured number of attempts; the whole call is bounded by the
//! operation timeout. The wire structs of each service live beside it (`ecs/api.rs`, `kms.rs`);
//! nothing here logs a body, so no token or data key is ever in a log.

use std::time::Duration;

use aws_config::SdkConfig;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ecs::AwsErrorInfo;
use crate::signed_http::{self, Answer, Post, SignedHttp, SignedHttpError};

/// The largest answer read: a DescribeTasks of 100 tasks is a few hundred KiB.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Error codes AWS's standard retry mode treats as throttling.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes and HTTP statuses AWS's standard retry mode treats as transient.
const TRANSIENT_CODES: &[&str] = &["RequestTimeout", "RequestTimeoutException"];
const TRANSIENT_STATUSES: &[u16] = &[500, 502, 503, 504];

/// Why a call failed. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The credential chain found nothing usable (one line).
    #[error("no usable AWS credentials: {0}")]
    Credentials(String),
    /// The request could not be built or signed.
    #[error("could not sign the request: {0}")]
    Signing(String),
    /// No HTTP answer: DNS, connection refused, TLS, a broken connection.
    #[error("{0}")]
    Unreachable(String),
    /// An attempt or the whole call ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// AWS answered with an error.
    #[error("HTTP {status} {aws}")]
    Service { status: u16, aws: AwsErrorInfo },
    /// A successful answer that is not the expected JSON.
    #[error("{0}")]
    Malformed(String),
}

impl CallError {
    /// Whether AWS's standard retry mode would try again.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::Timeout(_) => true,
            CallError::Service { status, aws } => {
                let code = aws.code.as_deref().unwrap_or_default();
                TRANSIENT_STATUSES.contains(status)
                    || THROTTLING_CODES.contains(&code)
                    || TRANSIENT_CODES.contains(&code)
            }
            CallError::Credentials(_) | CallError::Signing(_) | CallError::Malformed(_) => false,
        }
    }

    /// AWS's error code, for a service error.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Service { aws, .. } => aws.code.as_deref(),
            _ => None,
        }
    }
}

impl From<SignedHttpError> for CallError {
    fn from(error: SignedHttpError) -> Self {
        match error {
            SignedHttpError::Credentials(detail) => CallError::Credentials(detail),
            SignedHttpError::Signing(detail) => CallError::Signing(detail),
            SignedHttpError::Http { endpoint, reason } => {
                CallError::Unreachable(format!("calling {endpoint}: {reason}"))
            }
            SignedHttpError::Timeout => CallError::Timeout(error.to_string()),
        }
    }
}

/// Attempts, backoff and timeouts of every call: the `SdkConfig`'s retry and timeout settings
/// (`ecs::retry_config()`, `ecs::timeout_config()` in production).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Option<Duration>,
    pub operation_timeout: Option<Duration>,
}

impl CallPolicy {
    /// From the `SdkConfig`; without retry settings, one attempt.
    pub fn from_config(config: &SdkConfig) -> CallPolicy {
        let retry = config.retry_config();
        let timeouts = config.timeout_config();
        CallPolicy {
            max_attempts: retry.map_or(1, |retry| retry.max_attempts().max(1)),
            initial_backoff: retry.map_or(Duration::ZERO, |retry| retry.initial_backoff()),
            max_backoff: retry.map_or(Duration::ZERO, |retry| retry.max_backoff()),
            attempt_timeout: timeouts.and_then(|t| t.operation_attempt_timeout()),
            operation_timeout: timeouts.and_then(|t| t.operation_timeout()),
        }
    }

    /// The wait before attempt `failed + 1`: `jitter` (0..=1) times the doubling backoff,
    /// capped at `max_backoff` (the standard mode's "full jitter").
    pub fn backoff(&self, failed: u32, jitter: f64) -> Duration {
        let doubling = 2u32.saturating_pow(failed.saturating_sub(1));
        let ceiling = self
            .initial_backoff
            .saturating_mul(doubling)
            .min(self.max_backoff);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// One AWS JSON 1.1 service at one endpoint.
#[derive(Clone)]
pub struct JsonService {
    http: SignedHttp,
    endpoint: String,
    region: String,
    signing_name: &'static str,
    target_prefix: &'static str,
    policy: CallPolicy,
}

impl std::fmt::Debug for JsonService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonService")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("signing_name", &self.signing_name)
            .finish_non_exhaustive()
    }
}

/// Which service a [`JsonService`] calls.
#[derive(Clone, Copy, Debug)]
pub struct ServiceId {
    /// The service id of `AWS_ENDPOINT_URL_<ID>` and the profile's `services` section.
    pub env_id: &'static str,
    /// The SigV4 signing name, also the first label of the regional host name.
    pub signing_name: &'static str,
    /// The `X-Amz-Target` prefix, e.g. `TrentService`.
    pub target_prefix: &'static str,
}

/// The ECS API.
pub const ECS: ServiceId = ServiceId {
    env_id: "ECS",
    signing_name: "ecs",
    target_prefix: "AmazonEC2ContainerServiceV20141113",
};

/// The KMS API.
pub const KMS: ServiceId = ServiceId {
    env_id: "KMS",
    signing_name: "kms",
    target_prefix: "TrentService",
};

impl JsonService {
    /// A client at `endpoint` (see [`configured_endpoint`]). `None` without a credentials
    /// provider.
    pub fn new(
        config: &SdkConfig,
        service: ServiceId,
        region: &str,
        endpoint: String,
    ) -> Option<JsonService> {
        Some(JsonService {
            http: SignedHttp::new(config)?,
            endpoint,
            region: region.to_owned(),
            signing_name: service.signing_name,
            target_prefix: service.target_prefix,
            policy: CallPolicy::from_config(config),
        })
    }

    /// Where the calls go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls `operation` with `request`, retrying as the policy says, and reads the answer.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        operation: &str,
        request: &Q,
    ) -> Result<A, CallError> {
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|error| CallError::Signing(error.to_string()))?,
        );
        let target = format!("{}.{operation}", self.target_prefix);
        let attempts = self.attempts(operation, &target, body);
        match self.policy.operation_timeout {
            Some(limit) => tokio::time::timeout(limit, attempts).await.map_err(|_| {
                CallError::Timeout(format!(
                    "no response within the operation timeout ({limit:?})"
                ))
            })?,
            None => attempts.await,
        }
    }

    async fn attempts<A: DeserializeOwned>(
        &self,
        operation: &str,
        target: &str,
        body: Bytes,
    ) -> Result<A, CallError> {
        let mut failed = 0;
        loop {
            let result = self.attempt(target, body.clone()).await;
            match result {
                Err(error) if error.is_retryable() && failed + 1 < self.policy.max_attempts => {
                    failed += 1;
                    let delay = self.policy.backoff(failed, rand::random::<f64>());
                    tracing::debug!(operation, attempt = failed, %error, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }

    async fn attempt<A: DeserializeOwned>(
        &self,
        target: &str,
        body: Bytes,
    ) -> Result<A, CallError> {
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let sent = self.http.post_unbounded(Post {
            endpoint: &self.endpoint,
            service: self.signing_name,
            region: &self.region,
            headers: &headers,
            body,
            max_response: MAX_RESPONSE_BYTES,
        });
        let answer = match self.policy.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| {
                CallError::Timeout(format!(
                    "no response within the attempt timeout ({limit:?})"
                ))
            })?,
            None => sent.await,
        }?;
        tracing::debug!(
            x_amz_target = target,
            status = answer.status,
            request_id = answer.request_id.as_deref().unwrap_or("-"),
            "AWS answer"
        );
        decode(&answer)
    }
}

/// A 2xx answer's JSON, or the AWS error it carries.
pub fn decode<A: DeserializeOwned>(answer: &Answer) -> Result<A, CallError> {
    if !(200..300).contains(&answer.status) {
        return Err(CallError::Service {
            status: answer.status,
            aws: error_info(&answer.body, answer.request_id.as_deref()),
        });
    }
    serde_json::from_slice(&answer.body).map_err(|error| {
        CallError::Malformed(format!(
            "HTTP {} with a body that is not the expected JSON: {error}",
            answer.status
        ))
    })
}

/// The code (without its `namespace#`), message and request id of an error answer. A body
/// that is not JSON gives neither code nor message.
pub fn error_info(body: &[u8], request_id: Option<&str>) -> AwsErrorInfo {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        upper_message: Option<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    AwsErrorInfo {
        code: parsed.kind.map(|kind| {
            let code = kind.rsplit('#').next().unwrap_or(&kind);
            code.split(':').next().unwrap_or(code).to_owned()
        }),
        message: parsed.message.or(parsed.upper_message),
        request_id: request_id.map(str::to_owned),
    }
}

/// The endpoint of `service`, as the SDK clients chose it: an endpoint set explicitly on the
/// config (`--endpoint-url`) first; else `AWS_ENDPOINT_URL_<ID>` or the profile's `services`
/// section; else the process-wide endpoint (`AWS_ENDPOINT_URL`, the profile's `endpoint_url`);
/// else the regional endpoint.
pub fn configured_endpoint(config: &SdkConfig, service: ServiceId, region: &str) -> String {
    let explicit = config.get_origin("endpoint_url").is_client_config();
    let service_specific = if explicit {
        None
    } else {
        config.service_config().and_then(|loader| {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id(service.env_id)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            loader.load_config(key)
        })
    };
    signed_http::endpoint(
        service_specific.as_deref(),
        config.endpoint_url(),
        regional_endpoint(service, region),
    )
}

/// `https://<name>.<region>.amazonaws.com` (`.com.cn` in China).
pub fn regional_endpoint(service: ServiceId, region: &str) -> String {
    format!(
        "https://{}.{region}.{}",
        service.signing_name,
        signed_http::dns_suffix(region)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            request_id: Some("req-1".to_owned()),
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn an_error_answer_gives_code_message_and_request_id() {
        let info = error_info(
            br#"{"__type":"com.amazonaws.ecs#ClusterNotFoundException","message":"Cluster not found."}"#,
            Some("r-9"),
        );
        assert_eq!(info.code.as_deref(), Some("ClusterNotFoundException"));
        assert_eq!(info.message.as_deref(), Some("Cluster not found."));
        assert_eq!(info.request_id.as_deref(), Some("r-9"));
        let upper = error_info(
            br#"{"__type":"NotFoundException","Message":"no key"}"#,
            None,
        );
        assert_eq!(upper.code.as_deref(), Some("NotFoundException"));
        assert_eq!(upper.message.as_deref(), Some("no key"));
        let unreadable = error_info(b"<html>bad gateway</html>", Some("r"));
        assert_eq!(unreadable.code, None);
        assert_eq!(unreadable.message, None);
    }

    #[test]
    fn decode_reads_success_and_reports_errors() {
        #[derive(serde::Deserialize)]
        struct Out {
            value: u32,
        }
        let out: Out = decode(&answer(200, r#"{"value":7,"unknown":[1]}"#)).unwrap();
        assert_eq!(out.value, 7);
        let error = decode::<Out>(&answer(400, r#"{"__type":"ThrottlingException"}"#));
        assert!(
            matches!(&error, Err(CallError::Service { status: 400, aws }) if aws.code.as_deref() == Some("ThrottlingException") && aws.request_id.as_deref() == Some("req-1"))
        );
        assert!(matches!(
            decode::<Out>(&answer(200, "{ not json")),
            Err(CallError::Malformed(_))
        ));
    }

    #[test]
    fn throttling_transient_and_transport_errors_are_retried() {
        let service = |status, code: &str| CallError::Service {
            status,
            aws: AwsErrorInfo {
                code: Some(code.to_owned()),
                ..AwsErrorInfo::default()
            },
        };
        assert!(service(400, "ThrottlingException").is_retryable());
        assert!(service(400, "TooManyRequestsException").is_retryable());
        assert!(service(500, "ServerException").is_retryable());
        assert!(service(503, "Whatever").is_retryable());
        assert!(!service(400, "AccessDeniedException").is_retryable());
        assert!(!service(400, "ClusterNotFoundException").is_retryable());
        assert!(CallError::Unreachable("refused".into()).is_retryable());
        assert!(CallError::Timeout("slow".into()).is_retryable());
        assert!(!CallError::Credentials("none".into()).is_retryable());
        assert!(!CallError::Malformed("bad".into()).is_retryable());
    }

    #[test]
    fn the_policy_comes_from_the_config_and_backoff_is_bounded() {
        let config = SdkConfig::builder()
            .retry_config(crate::ecs::retry_config())
            .timeout_config(crate::ecs::timeout_config())
            .build();
        let policy = CallPolicy::from_config(&config);
        assert_eq!(policy.max_attempts, crate::ecs::MAX_ATTEMPTS);
        assert_eq!(policy.attempt_timeout, Some(crate::ecs::ATTEMPT_TIMEOUT));
        assert_eq!(
            policy.operation_timeout,
            Some(crate::ecs::OPERATION_TIMEOUT)
        );
        assert_eq!(policy.backoff(1, 1.0), crate::ecs::INITIAL_BACKOFF);
        assert_eq!(policy.backoff(2, 1.0), crate::ecs::INITIAL_BACKOFF * 2);
        assert_eq!(policy.backoff(30, 1.0), crate::ecs::MAX_BACKOFF);
        assert_eq!(policy.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff(1, 0.5), crate::ecs::INITIAL_BACKOFF / 2);
        let bare = CallPolicy::from_config(&SdkConfig::builder().build());
        assert_eq!(bare.max_attempts, 1);
    }

    #[derive(Debug)]
    struct EcsVariable;

    impl aws_types::service_config::LoadServiceConfig for EcsVariable {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            (key.service_id() == "ECS" && key.env() == "AWS_ENDPOINT_URL")
                .then(|| "http://ecs-variable:1".to_owned())
        }
    }

    #[test]
    fn endpoints_follow_the_sdk_order() {
        // AWS_ENDPOINT_URL_ECS beats the process-wide endpoint (AWS_ENDPOINT_URL, profile) ...
        let from_environment = SdkConfig::builder()
            .service_config(EcsVariable)
            .endpoint_url("http://everything:2")
            .build();
        assert_eq!(
            configured_endpoint(&from_environment, ECS, "eu-west-1"),
            "http://ecs-variable:1/"
        );
        assert_eq!(
            configured_endpoint(&from_environment, KMS, "eu-west-1"),
            "http://everything:2/"
        );
        // ... but not an endpoint set on the loader (--endpoint-url).
        let mut explicit = SdkConfig::builder()
            .service_config(EcsVariable)
            .endpoint_url("http://flag:3");
        explicit.insert_origin("endpoint_url", aws_types::origin::Origin::shared_config());
        assert_eq!(
            configured_endpoint(&explicit.build(), ECS, "eu-west-1"),
            "http://flag:3/"
        );
        let nothing = SdkConfig::builder().build();
        assert_eq!(
            configured_endpoint(&nothing, KMS, "us-east-1"),
            "https://kms.us-east-1.amazonaws.com/"
        );
    }

    #[test]
    fn regional_endpoints() {
        assert_eq!(
            regional_endpoint(ECS, "eu-west-1"),
            "https://ecs.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            regional_endpoint(KMS, "cn-north-1"),
            "https://kms.cn-north-1.amazonaws.com.cn"
        );
    }
}
