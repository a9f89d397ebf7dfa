//! SSM `ResumeSession`: a fresh data channel token for a session whose websocket dropped.
//!
//! This is the one Systems Manager call ecs-exec makes, so it is signed with `aws-sigv4` and
//! sent with hyper (both already in the build for the ECS client) rather than through
//! aws-sdk-ssm, which would be the largest crate of the build for a single operation.
//! Credentials and region come from the same `SdkConfig` as the ECS client. Nothing here logs
//! the token or the credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::ecs::ChannelToken;

/// The whole call (connect, TLS, request, response) must finish within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A ResumeSession answer is a few hundred bytes; anything far larger is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const TARGET: &str = "AmazonSSM.ResumeSession";
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

/// A small SSM client that can only resume sessions.
#[derive(Clone)]
pub struct SsmApi {
    endpoint: String,
    region: String,
    credentials: SharedCredentialsProvider,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let credentials = config.credentials_provider()?;
        let endpoint = ssm_endpoint(
            std::env::var("AWS_ENDPOINT_URL_SSM").ok().as_deref(),
            config.endpoint_url(),
            &region,
        );
        let connector = https_connector()?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Some(SsmApi {
            endpoint,
            region,
            credentials,
            client,
        })
    }

    /// Where the calls go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Asks SSM for a new token (and stream URL) for `session_id`.
    pub async fn resume_session(&self, session_id: &str) -> Result<ResumedSession, SsmError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call(session_id))
            .await
            .map_err(|_| SsmError::Timeout)?
    }

    async fn call(&self, session_id: &str) -> Result<ResumedSession, SsmError> {
        let body = Bytes::from(serde_json::json!({ "SessionId": session_id }).to_string());
        let request = self.signed_request(body).await?;
        let http_error = |reason: String| SsmError::Http {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| http_error(error_chain(&error)))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| http_error(error.to_string()))?
            .to_bytes();
        parse_response(status, &bytes)
    }

    async fn signed_request(&self, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, SsmError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|error| SsmError::Credentials(error_chain(&error)))?;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .map_err(|error| SsmError::Signing(error.to_string()))?
            .into();
        let mut request = hyper::Request::post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", TARGET)
            .body(Full::new(body.clone()))
            .map_err(|error| SsmError::Signing(error.to_string()))?;
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .ok_or_else(|| SsmError::Signing(format!("no host in {}", self.endpoint)))?;
        request.headers_mut().insert(
            hyper::header::HOST,
            host.parse()
                .map_err(|_| SsmError::Signing(format!("bad host in {}", self.endpoint)))?,
        );
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            request
                .headers()
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            aws_sigv4::http_request::SignableBody::Bytes(&body),
        )
        .map_err(|error| SsmError::Signing(error.to_string()))?;
        let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|error| SsmError::Signing(error.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// HTTPS with the system's roots, verified as rustls always does. A machine without any root
/// certificate still gets a connector: http:// endpoints (a local emulator) work and https://
/// ones fail verification.
fn https_connector() -> Option<hyper_rustls::HttpsConnector<HttpConnector>> {
    let provider = || Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider())
    {
        Ok(builder) => builder,
        Err(error) => {
            tracing::debug!(%error, "no system root certificates");
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    Some(builder.https_or_http().enable_http1().build())
}

/// `AWS_ENDPOINT_URL_SSM`, else the process-wide endpoint (`--endpoint-url` or
/// `AWS_ENDPOINT_URL`), else the regional endpoint.
fn ssm_endpoint(service_env: Option<&str>, global: Option<&str>, region: &str) -> String {
    let chosen = service_env
        .filter(|url| !url.trim().is_empty())
        .or(global.filter(|url| !url.trim().is_empty()));
    let mut endpoint = match chosen {
        Some(url) => url.trim().to_owned(),
        None => {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://ssm.{region}.{suffix}")
        }
    };
    if !endpoint.ends_with('/') {
        endpoint.push('/');
    }
    endpoint
}

fn parse_response(status: u16, body: &[u8]) -> Result<ResumedSession, SsmError> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| SsmError::Malformed(format!("HTTP {status} with a body that is not JSON")))?;
    let text = |name: &str| json.get(name).and_then(|value| value.as_str());
    if !(200..300).contains(&status) {
        let code = text("__type")
            .map(|kind| kind.rsplit('#').next().unwrap_or(kind).to_owned())
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = text("message")
            .or_else(|| text("Message"))
            .unwrap_or_default()
            .to_owned();
        return Err(SsmError::Api {
            status,
            code,
            message,
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

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
