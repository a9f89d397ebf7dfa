//! SSM `ResumeSession`: a fresh data channel token for a session whose websocket dropped (and
//! `TerminateSession`, which `ecs-exec doctor` uses to end its probe session).
//!
//! These are the only Systems Manager calls ecs-exec makes, so they are signed with `aws-sigv4`
//! and sent with hyper ([`crate::signed_http`]) rather than through aws-sdk-ssm, which would be
//! the largest crate of the build for two operations.
//! Credentials and region come from the same `SdkConfig` as the ECS client. Nothing here logs
//! the token or the credentials.

use aws_config::SdkConfig;
use bytes::Bytes;

use crate::ecs::ChannelToken;
use crate::signed_http::{self, Answer, Post, SignedHttp, SignedHttpError};

pub use crate::signed_http::CALL_TIMEOUT;
/// A ResumeSession answer is a few hundred bytes; anything far larger is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const RESUME_TARGET: &str = "AmazonSSM.ResumeSession";
const TERMINATE_TARGET: &str = "AmazonSSM.TerminateSession";
const SIGNING_NAME: &str = "ssm";

/// What ResumeSession returns: where to reconnect and the token to open the channel with.
#[derive(Clone, Debug)]
pub struct ResumedSession {
    pub stream_url: String,
    pub token: ChannelToken,
}

/// Why ResumeSession failed. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsmError {
    #[error("no usable AWS credentials for ssm:ResumeSession: {0}")]
    Credentials(String),
    #[error("signing ssm:ResumeSession: {0}")]
    Signing(String),
    #[error("calling ssm:ResumeSession at {endpoint}: {reason}")]
    Http { endpoint: String, reason: String },
    #[error("ssm:ResumeSession failed with HTTP {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("ssm:ResumeSession returned an unreadable answer: {0}")]
    Malformed(String),
    #[error("ssm:ResumeSession timed out after {CALL_TIMEOUT:?}")]
    Timeout,
}

/// A small SSM client that can only resume and terminate sessions.
#[derive(Clone)]
pub struct SsmApi {
    endpoint: String,
    region: String,
    http: SignedHttp,
}

impl std::fmt::Debug for SsmApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsmApi")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl SsmApi {
    /// Builds the client from the process's `SdkConfig`. `None` when there is no region or no
    /// credentials provider (the ECS client could not have worked either).
    pub fn new(config: &SdkConfig) -> Option<SsmApi> {
        let region = config.region()?.to_string();
        let endpoint = ssm_endpoint(
            std::env::var("AWS_ENDPOINT_URL_SSM").ok().as_deref(),
            config.endpoint_url(),
            &region,
        );
        Some(SsmApi {
            endpoint,
            region,
            http: SignedHttp::new(config)?,
        })
    }

    /// Where the calls go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Asks SSM for a new token (and stream URL) for `session_id`.
    pub async fn resume_session(&self, session_id: &str) -> Result<ResumedSession, SsmError> {
        let answer = self.call(RESUME_TARGET, session_id).await?;
        parse_response(answer.status, &answer.body)
    }

    /// Ends `session_id` (SSM TerminateSession); an unknown session is not an error.
    pub async fn terminate_session(&self, session_id: &str) -> Result<(), SsmError> {
        let answer = self.call(TERMINATE_TARGET, session_id).await?;
        if (200..300).contains(&answer.status) {
            return Ok(());
        }
        parse_response(answer.status, &answer.body).map(|_| ())
    }

    async fn call(&self, target: &str, session_id: &str) -> Result<Answer, SsmError> {
        let body = Bytes::from(serde_json::json!({ "SessionId": session_id }).to_string());
        self.http
            .post(Post {
                endpoint: &self.endpoint,
                service: SIGNING_NAME,
                region: &self.region,
                headers: &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", target),
                ],
                body,
                max_response: MAX_RESPONSE_BYTES,
            })
            .await
            .map_err(|error| match error {
                SignedHttpError::Credentials(reason) => SsmError::Credentials(reason),
                SignedHttpError::Signing(reason) => SsmError::Signing(reason),
                SignedHttpError::Http { endpoint, reason } => SsmError::Http { endpoint, reason },
                SignedHttpError::Timeout => SsmError::Timeout,
            })
    }
}

/// `AWS_ENDPOINT_URL_SSM`, else the process-wide endpoint (`--endpoint-url` or
/// `AWS_ENDPOINT_URL`), else the regional endpoint.
fn ssm_endpoint(service_env: Option<&str>, global: Option<&str>, region: &str) -> String {
    signed_http::endpoint(
        service_env,
        global,
        format!("https://ssm.{region}.{}", signed_http::dns_suffix(region)),
    )
}

fn parse_response(status: u16, body: &[u8]) -> Result<ResumedSession, SsmError> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| SsmError::Malformed(format!("HTTP {status} with a body that is not JSON")))?;
    let text = |name: &str| json.get(name).and_then(|value| value.as_str());
    if !(200..300).contains(&status) {
        let aws = crate::aws_json::error_info(body, None);
        return Err(SsmError::Api {
            status,
            code: aws.code.unwrap_or_else(|| "UnknownError".to_owned()),
            message: aws.message.unwrap_or_default(),
        });
    }
    match (text("StreamUrl"), text("TokenValue")) {
        (Some(stream_url), Some(token)) if !stream_url.is_empty() && !token.is_empty() => {
            Ok(ResumedSession {
                stream_url: stream_url.to_owned(),
                token: ChannelToken::new(token),
            })
        }
        _ => Err(SsmError::Malformed(
            "StreamUrl or TokenValue is missing".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_prefers_the_service_variable_then_the_global_one() {
        assert_eq!(
            ssm_endpoint(Some("http://127.0.0.1:9"), Some("http://x"), "eu-west-1"),
            "http://127.0.0.1:9/"
        );
        assert_eq!(
            ssm_endpoint(None, Some("http://x:1/"), "eu-west-1"),
            "http://x:1/"
        );
        assert_eq!(
            ssm_endpoint(Some(" "), None, "eu-west-1"),
            "https://ssm.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            ssm_endpoint(None, None, "cn-north-1"),
            "https://ssm.cn-north-1.amazonaws.com.cn/"
        );
    }

    #[test]
    fn a_good_answer_gives_the_url_and_token() {
        let resumed = parse_response(
            200,
            br#"{"SessionId":"s","StreamUrl":"wss://h/v1/data-channel/s","TokenValue":"t0k"}"#,
        )
        .expect("parse");
        assert_eq!(resumed.stream_url, "wss://h/v1/data-channel/s");
        assert_eq!(resumed.token.expose(), "t0k");
    }

    #[test]
    fn errors_keep_the_aws_code_and_message() {
        let error = parse_response(
            400,
            br#"{"__type":"com.amazonaws.ssm#DoesNotExistException","message":"Session s does not exist"}"#,
        )
        .expect_err("error");
        assert_eq!(
            error.to_string(),
            "ssm:ResumeSession failed with HTTP 400: DoesNotExistException: Session s does not exist"
        );
    }

    #[test]
    fn missing_fields_and_non_json_are_malformed() {
        assert!(matches!(
            parse_response(200, br#"{"SessionId":"s"}"#),
            Err(SsmError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(502, b"<html>bad gateway</html>"),
            Err(SsmError::Malformed(_))
        ));
    }
}
