//! SigV4-signed requests over hyper, for the few AWS calls made without an SDK crate: `POST`s
//! (the ECS and KMS JSON APIs through [`crate::aws_json`], SSM ResumeSession/TerminateSession,
//! STS GetCallerIdentity, IAM SimulatePrincipalPolicy, CloudWatch Logs DescribeLogGroups) and
//! S3 `GET`s (GetBucketEncryption).
//!
//! One [`SignedHttp`] holds the process's credentials provider and an HTTPS client; each call
//! names its endpoint, signing service and region. Pulling in aws-sdk-ecs, -kms, -ssm, -sts,
//! -iam, -cloudwatchlogs and -s3 for a handful of operations would make them the largest crates
//! of the build. Nothing here logs
//! the body, the credentials or the signature.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The whole call (connect, TLS, request, response) must finish within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a signed call did not get an HTTP answer. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignedHttpError {
    #[error("no usable AWS credentials: {0}")]
    Credentials(String),
    #[error("signing the request: {0}")]
    Signing(String),
    #[error("calling {endpoint}: {reason}")]
    Http { endpoint: String, reason: String },
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
}

/// An HTTP answer: status, the `x-amzn-RequestId` header when present, and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub request_id: Option<String>,
    pub body: Bytes,
}

/// A `POST` to sign (for `service` in `region`) and send to `endpoint` with these headers and
/// body; at most `max_response` bytes of the answer are read.
#[derive(Debug)]
pub struct Post<'a> {
    pub endpoint: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Bytes,
    pub max_response: usize,
}

/// The signer and HTTP client.
#[derive(Clone)]
pub struct SignedHttp {
    credentials: SharedCredentialsProvider,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for SignedHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedHttp").finish_non_exhaustive()
    }
}

impl SignedHttp {
    /// From the process's `SdkConfig`; `None` without a credentials provider.
    pub fn new(config: &SdkConfig) -> Option<SignedHttp> {
        let credentials = config.credentials_provider()?;
        let connect_timeout = config
            .timeout_config()
            .and_then(|timeouts| timeouts.connect_timeout());
        let client = Client::builder(TokioExecutor::new()).build(https_connector(connect_timeout)?);
        Some(SignedHttp {
            credentials,
            client,
        })
    }

    /// The credentials provider the calls are signed with.
    pub fn credentials(&self) -> &SharedCredentialsProvider {
        &self.credentials
    }

    /// Signs and sends `post`, bounded by [`CALL_TIMEOUT`].
    pub async fn post(&self, post: Post<'_>) -> Result<Answer, SignedHttpError> {
        tokio::time::timeout(CALL_TIMEOUT, self.post_unbounded(post))
            .await
            .map_err(|_| SignedHttpError::Timeout)?
    }

    /// [`SignedHttp::post`] without its [`CALL_TIMEOUT`]: for callers that bound each attempt
    /// themselves (the AWS JSON calls, with the configured timeouts and retries).
    pub async fn post_unbounded(&self, post: Post<'_>) -> Result<Answer, SignedHttpError> {
        let signed = Signed {
            method: "POST",
            url: post.endpoint,
            service: post.service,
            region: post.region,
            settings: aws_sigv4::http_request::SigningSettings::default(),
        };
        self.call(signed, post.headers, post.body, post.max_response)
            .await
    }

    /// Signs (for S3 in `region`) and sends `GET url` without a body; reads at most
    /// `max_response` bytes of the answer. S3 signs the path as it is (no second
    /// percent-encoding, no normalisation) and wants the payload hash in `x-amz-content-sha256`.
    pub async fn s3_get(
        &self,
        url: &str,
        region: &str,
        max_response: usize,
    ) -> Result<Answer, SignedHttpError> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SigningSettings, UriPathNormalizationMode,
        };
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let signed = Signed {
            method: "GET",
            url,
            service: "s3",
            region,
            settings,
        };
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.call(signed, &[], Bytes::new(), max_response),
        )
        .await
        .map_err(|_| SignedHttpError::Timeout)?
    }

    async fn call(
        &self,
        signed: Signed<'_>,
        headers: &[(&str, &str)],
        body: Bytes,
        max_response: usize,
    ) -> Result<Answer, SignedHttpError> {
        let endpoint = signed.url;
        let request = self.signed_request(signed, headers, body).await?;
        let http_error = |reason: String| SignedHttpError::Http {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| http_error(crate::ecs::display_chain(&error)))?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), max_response)
            .collect()
            .await
            .map_err(|error| http_error(error.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            request_id,
            body,
        })
    }

    async fn signed_request(
        &self,
        signed: Signed<'_>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, SignedHttpError> {
        let endpoint = signed.url;
        let signing = |error: &dyn std::fmt::Display| SignedHttpError::Signing(error.to_string());
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|error| SignedHttpError::Credentials(crate::ecs::display_chain(&error)))?;
        let identity = credentials.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(signed.region)
            .name(signed.service)
            .time(SystemTime::now())
            .settings(signed.settings)
            .build()
            .map_err(|error| signing(&error))?
            .into();
        let mut builder = hyper::Request::builder()
            .method(signed.method)
            .uri(endpoint);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder
            .body(Full::new(body.clone()))
            .map_err(|error| signing(&error))?;
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .ok_or_else(|| SignedHttpError::Signing(format!("no host in {endpoint}")))?;
        request.headers_mut().insert(
            hyper::header::HOST,
            host.parse()
                .map_err(|_| SignedHttpError::Signing(format!("bad host in {endpoint}")))?,
        );
        let signable = aws_sigv4::http_request::SignableRequest::new(
            signed.method,
            endpoint,
            request
                .headers()
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            aws_sigv4::http_request::SignableBody::Bytes(&body),
        )
        .map_err(|error| signing(&error))?;
        let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|error| signing(&error))?
            .into_parts();
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// What one request is signed as.
struct Signed<'a> {
    method: &'static str,
    url: &'a str,
    service: &'a str,
    region: &'a str,
    settings: aws_sigv4::http_request::SigningSettings,
}

/// `AWS_ENDPOINT_URL_<SERVICE>` (`service_env`), else the process-wide endpoint
/// (`--endpoint-url` or `AWS_ENDPOINT_URL`), else `default`; always ending in `/`.
pub fn endpoint(service_env: Option<&str>, global: Option<&str>, default: String) -> String {
    let chosen = service_env
        .filter(|url| !url.trim().is_empty())
        .or(global.filter(|url| !url.trim().is_empty()));
    let mut endpoint = chosen.map_or(default, |url| url.trim().to_owned());
    if !endpoint.ends_with('/') {
        endpoint.push('/');
    }
    endpoint
}

/// `amazonaws.com`, or `amazonaws.com.cn` in the China regions.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// HTTPS with the process's TLS configuration (`crate::tls`), verified as rustls always does.
/// TCP connects give up after `connect_timeout`.
fn https_connector(
    connect_timeout: Option<std::time::Duration>,
) -> Option<hyper_rustls::HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(connect_timeout);
    let tls = crate::tls::client_config()?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config((*tls).clone());
    Some(builder.https_or_http().enable_http1().wrap_connector(http))
}
