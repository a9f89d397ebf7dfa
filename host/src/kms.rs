//! KMS GenerateDataKey for encrypted sessions (README "KMS encryption"): the client, the
//! session's encryption context and target id, and the mapping of KMS failures to
//! [`KmsError`].
//!
//! The client is built from the process's one `SdkConfig` (credentials, region, retries and
//! timeouts as for ECS) and speaks AWS JSON 1.1 (`TrentService.<Operation>`) through
//! [`crate::aws_json`], without an SDK crate. The data key's plaintext goes straight into a
//! zeroising [`DataKey`]; nothing here logs it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use aws_config::SdkConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aws_json::{self, CallError, JsonService};
use crate::channel::KmsError;
use crate::channel::crypto::{DATA_KEY_LEN, DataKey};
use crate::channel::session::{DataKeyGrant, DataKeyRequest};
use crate::channel::transport::DataKeySource;
use crate::ecs::{self, AwsErrorInfo, AwsSettings, Target};

/// Encryption context key of the SSM session id.
pub const CONTEXT_SESSION_ID: &str = "aws:ssm:SessionId";
/// Encryption context key of the session's target.
pub const CONTEXT_TARGET_ID: &str = "aws:ssm:TargetId";
/// Encryption context key of the agent's challenge string, when it sent one.
pub const CONTEXT_RANDOM_CHALLENGE: &str = "aws:ssm:RandomChallenge";

/// The KMS client; `None` inside when the configuration has no region or no credentials
/// provider (then every call fails with [`KmsError::NoCredentials`]).
#[derive(Clone, Debug)]
pub struct KmsApi {
    service: Option<JsonService>,
}

impl KmsApi {
    /// Builds the client from the process's `SdkConfig`. `settings` tells whether an endpoint
    /// was given with `--endpoint-url` (see [`endpoint_override`]).
    pub fn new(config: &SdkConfig, settings: &AwsSettings) -> KmsApi {
        let service = config.region().and_then(|region| {
            let region = region.to_string();
            let endpoint = match endpoint_override(settings.endpoint_url.is_some(), |name| {
                std::env::var(name).ok()
            }) {
                Some(endpoint) => {
                    crate::signed_http::endpoint(Some(&endpoint), None, endpoint.clone())
                }
                None => aws_json::configured_endpoint(config, aws_json::KMS, &region),
            };
            JsonService::new(config, aws_json::KMS, &region, endpoint)
        });
        KmsApi { service }
    }

    /// Where the calls go, when the client could be built.
    pub fn endpoint(&self) -> Option<&str> {
        self.service.as_ref().map(JsonService::endpoint)
    }

    /// DescribeKey (for `ecs-exec doctor`).
    pub async fn describe_key(&self, key_id: &str) -> Result<DescribedKey, CallError> {
        let service = self.service.as_ref().ok_or_else(no_client)?;
        service.call("DescribeKey", &DescribeKey { key_id }).await
    }

    /// The data key source of one session: GenerateDataKey with its encryption context.
    pub fn session_keys(&self, session_id: &str, target: &Target) -> Arc<SessionKeys> {
        Arc::new(SessionKeys {
            service: self.service.clone(),
            session_id: session_id.to_owned(),
            cluster: cluster_name(&target.cluster_name).to_owned(),
            task_id: target.task_id.clone(),
            container: target.container_name.clone(),
            runtime_id: target.runtime_id.clone(),
        })
    }
}

fn no_client() -> CallError {
    CallError::Credentials("no region or no credentials provider in the configuration".to_owned())
}

/// The KMS endpoint, when it must differ from the one [`aws_json::configured_endpoint`] gives.
///
/// Without `--endpoint-url`, that reads `AWS_ENDPOINT_URL_KMS`, then `AWS_ENDPOINT_URL` (and
/// the profile), as for ECS. An endpoint set on the loader (`--endpoint-url`), however, goes
/// ahead of `AWS_ENDPOINT_URL_KMS` there; so then `AWS_ENDPOINT_URL_KMS` is applied here, and
/// `--endpoint-url` is the fallback, as for SSM.
pub fn endpoint_override(
    explicit_endpoint: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if !explicit_endpoint {
        return None;
    }
    env("AWS_ENDPOINT_URL_KMS").filter(|value| !value.trim().is_empty())
}

/// The cluster's name, also when given as an ARN (`arn:…:cluster/NAME`): the target id uses
/// the name.
pub fn cluster_name(cluster: &str) -> &str {
    match cluster
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":cluster/"))
    {
        Some((_, name)) if !name.is_empty() => name,
        _ => cluster,
    }
}

/// The SSM target of an ECS Exec session: `ecs:<clusterName>_<taskId>_<runtimeId>`.
pub fn target_id(cluster_name: &str, task_id: &str, runtime_id: &str) -> String {
    format!("ecs:{cluster_name}_{task_id}_{runtime_id}")
}

/// The encryption context the agent's Decrypt will use: the session id, the target, and the
/// agent's challenge exactly as it sent it (the agent adds that entry because we acknowledge).
pub fn encryption_context(
    session_id: &str,
    target_id: &str,
    challenge: Option<&str>,
) -> HashMap<String, String> {
    let mut context = HashMap::from([
        (CONTEXT_SESSION_ID.to_owned(), session_id.to_owned()),
        (CONTEXT_TARGET_ID.to_owned(), target_id.to_owned()),
    ]);
    if let Some(challenge) = challenge {
        context.insert(CONTEXT_RANDOM_CHALLENGE.to_owned(), challenge.to_owned());
    }
    context
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKey<'a> {
    key_id: &'a str,
    number_of_bytes: usize,
    encryption_context: HashMap<String, String>,
}

/// GenerateDataKey's answer. `Plaintext` is the data key: `Debug` leaves it out, and it is
/// decoded into zeroising memory.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GeneratedDataKey {
    ciphertext_blob: Option<String>,
    #[serde(default, deserialize_with = "zeroizing")]
    plaintext: Option<Zeroizing<String>>,
}

fn zeroizing<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Zeroizing<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(|text| text.map(Zeroizing::new))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKey<'a> {
    key_id: &'a str,
}

/// DescribeKey's answer: the fields the doctor reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribedKey {
    pub key_metadata: Option<KeyMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    pub arn: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    pub key_state: Option<String>,
}

/// GenerateDataKey for one session.
#[derive(Clone)]
pub struct SessionKeys {
    service: Option<JsonService>,
    session_id: String,
    cluster: String,
    task_id: String,
    container: String,
    runtime_id: Option<String>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("session_id", &self.session_id)
            .field("cluster", &self.cluster)
            .field("task_id", &self.task_id)
            .field("runtime_id", &self.runtime_id)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    async fn generate_data_key(&self, request: DataKeyRequest) -> Result<DataKeyGrant, KmsError> {
        let key_id = request.key_id;
        let Some(runtime_id) = &self.runtime_id else {
            return Err(KmsError::NoRuntimeId {
                key_id,
                task_id: self.task_id.clone(),
                container: self.container.clone(),
            });
        };
        let target = target_id(&self.cluster, &self.task_id, runtime_id);
        let context = encryption_context(&self.session_id, &target, request.challenge.as_deref());
        tracing::debug!(key_id = %key_id, target = %target, "KMS GenerateDataKey");
        let request = GenerateDataKey {
            key_id: &key_id,
            number_of_bytes: DATA_KEY_LEN,
            encryption_context: context,
        };
        let result = match &self.service {
            Some(service) => service.call("GenerateDataKey", &request).await,
            None => Err(no_client()),
        };
        let output: GeneratedDataKey = result.map_err(|error| from_call(&key_id, error))?;
        grant(&key_id, output)
    }
}

/// The data key and its encrypted copy, from GenerateDataKey's base64 fields.
fn grant(key_id: &str, output: GeneratedDataKey) -> Result<DataKeyGrant, KmsError> {
    let encoded = output
        .plaintext
        .ok_or_else(|| missing(key_id, "Plaintext"))?;
    let plaintext = Zeroizing::new(
        BASE64
            .decode(encoded.as_bytes())
            .map_err(|_| missing(key_id, "valid base64 Plaintext"))?,
    );
    let data_key = DataKey::from_slice(&plaintext).map_err(KmsError::Crypto)?;
    let ciphertext_blob = output
        .ciphertext_blob
        .map(|blob| BASE64.decode(blob.as_bytes()))
        .transpose()
        .map_err(|_| missing(key_id, "valid base64 CiphertextBlob"))?
        .map(Bytes::from)
        .filter(|blob| !blob.is_empty())
        .ok_or_else(|| missing(key_id, "CiphertextBlob"))?;
    Ok(DataKeyGrant {
        ciphertext_blob,
        data_key,
    })
}

impl DataKeySource for SessionKeys {
    fn generate(
        &self,
        request: DataKeyRequest,
    ) -> BoxFuture<'static, Result<DataKeyGrant, KmsError>> {
        let keys = self.clone();
        Box::pin(async move { keys.generate_data_key(request).await })
    }
}

fn missing(key_id: &str, field: &str) -> KmsError {
    KmsError::Rejected {
        key_id: key_id.to_owned(),
        aws: format!("(the GenerateDataKey response has no {field})"),
    }
}

/// Maps a failed GenerateDataKey (after its retries) to the matching [`KmsError`].
fn from_call(key_id: &str, error: CallError) -> KmsError {
    let key_id = key_id.to_owned();
    match error {
        CallError::Credentials(detail) => KmsError::NoCredentials { key_id, detail },
        CallError::Service { aws, .. } => from_service_code(key_id, aws),
        CallError::Timeout(detail)
        | CallError::Unreachable(detail)
        | CallError::Malformed(detail) => KmsError::Unavailable {
            key_id,
            detail: ecs::one_line(&detail),
        },
        CallError::Signing(detail) => KmsError::Rejected {
            key_id,
            aws: format!("({})", ecs::one_line(&detail)),
        },
    }
}

/// Maps a KMS error code to a variant. Pure, so each code is unit-tested.
pub fn from_service_code(key_id: String, aws: AwsErrorInfo) -> KmsError {
    let code = aws.code.as_deref().unwrap_or_default();
    let text = aws.to_string();
    match code {
        "AccessDeniedException" | "AccessDenied" => {
            KmsError::GenerateDataKeyDenied { key_id, aws: text }
        }
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => KmsError::NoCredentials {
            key_id,
            detail: format!("AWS rejected them {text}"),
        },
        "NotFoundException" => KmsError::KeyNotFound { key_id, aws: text },
        "DisabledException" | "KMSInvalidStateException" => {
            KmsError::KeyDisabled { key_id, aws: text }
        }
        "ThrottlingException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ServiceUnavailableException" => KmsError::Unavailable {
            key_id,
            detail: ecs::one_line(&text),
        },
        _ => KmsError::Rejected { key_id, aws: text },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(code: &str, message: &str) -> AwsErrorInfo {
        AwsErrorInfo {
            code: Some(code.to_owned()),
            message: Some(message.to_owned()),
            request_id: Some("req-9".to_owned()),
        }
    }

    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1f2e3d4c";

    #[test]
    fn the_cluster_name_is_taken_from_an_arn() {
        assert_eq!(cluster_name("demo"), "demo");
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/secure"),
            "secure"
        );
        assert_eq!(
            cluster_name("arn:aws-cn:ecs:cn-north-1:123456789012:cluster/a-b_c"),
            "a-b_c"
        );
        assert_eq!(
            cluster_name("arn:aws:ecs:r:a:cluster/"),
            "arn:aws:ecs:r:a:cluster/"
        );
    }

    #[test]
    fn the_target_id_joins_cluster_task_and_runtime_id() {
        assert_eq!(
            target_id("secure", "0a1b2c", "0a1b2c-2785300577"),
            "ecs:secure_0a1b2c_0a1b2c-2785300577"
        );
    }

    #[test]
    fn the_encryption_context_is_exact() {
        let without = encryption_context("sess-1", "ecs:c_t_r", None);
        assert_eq!(
            without,
            HashMap::from([
                ("aws:ssm:SessionId".to_owned(), "sess-1".to_owned()),
                ("aws:ssm:TargetId".to_owned(), "ecs:c_t_r".to_owned()),
            ])
        );
        let with = encryption_context("sess-1", "ecs:c_t_r", Some("q2Fy+/=="));
        assert_eq!(with.len(), 3);
        assert_eq!(
            with.get("aws:ssm:RandomChallenge").map(String::as_str),
            Some("q2Fy+/==")
        );
    }

    #[test]
    fn aws_endpoint_url_kms_wins_over_an_explicit_endpoint() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        // aws-config's own order applies without --endpoint-url.
        assert_eq!(
            endpoint_override(false, env(&[("AWS_ENDPOINT_URL_KMS", "x")])),
            None
        );
        // With it: the KMS variable first, else the --endpoint-url already in the config.
        assert_eq!(endpoint_override(true, env(&[])), None);
        assert_eq!(
            endpoint_override(
                true,
                env(&[
                    ("AWS_ENDPOINT_URL", "http://all"),
                    ("AWS_ENDPOINT_URL_KMS", "http://kms")
                ])
            ),
            Some("http://kms".to_owned())
        );
        assert_eq!(
            endpoint_override(true, env(&[("AWS_ENDPOINT_URL_KMS", " ")])),
            None
        );
    }

    #[test]
    fn kms_codes_map_to_their_errors() {
        let denied = from_service_code(
            KEY.to_owned(),
            info(
                "AccessDeniedException",
                "User: arn:aws:iam::1:user/u is not authorized to perform: kms:GenerateDataKey",
            ),
        );
        let text = denied.to_string();
        assert!(matches!(denied, KmsError::GenerateDataKeyDenied { .. }));
        assert!(
            text.contains("kms:GenerateDataKey") && text.contains(KEY),
            "{text}"
        );
        assert!(text.contains("req-9"), "{text}");
        assert!(matches!(
            from_service_code(KEY.to_owned(), info("NotFoundException", "no key")),
            KmsError::KeyNotFound { .. }
        ));
        let disabled = from_service_code(KEY.to_owned(), info("DisabledException", "off"));
        assert!(matches!(disabled, KmsError::KeyDisabled { .. }));
        assert!(disabled.to_string().contains(KEY));
        assert!(matches!(
            from_service_code(KEY.to_owned(), info("ThrottlingException", "slow down")),
            KmsError::Unavailable { .. }
        ));
        assert!(matches!(
            from_service_code(KEY.to_owned(), info("UnrecognizedClientException", "bad")),
            KmsError::NoCredentials { .. }
        ));
        assert!(matches!(
            from_service_code(KEY.to_owned(), info("ValidationException", "bad")),
            KmsError::Rejected { .. }
        ));
    }

    #[test]
    fn the_answer_gives_the_key_and_its_blob() {
        let key = [7u8; DATA_KEY_LEN];
        let answer: GeneratedDataKey = serde_json::from_value(serde_json::json!({
            "CiphertextBlob": BASE64.encode(b"blob"),
            "Plaintext": BASE64.encode(key),
            "KeyId": KEY
        }))
        .unwrap();
        let grant = grant(KEY, answer).unwrap();
        assert_eq!(&grant.ciphertext_blob[..], b"blob");
        let short: GeneratedDataKey = serde_json::from_value(serde_json::json!({
            "CiphertextBlob": BASE64.encode(b"blob"),
            "Plaintext": BASE64.encode([1u8; 3])
        }))
        .unwrap();
        assert!(matches!(super::grant(KEY, short), Err(KmsError::Crypto(_))));
        let no_blob: GeneratedDataKey =
            serde_json::from_value(serde_json::json!({"Plaintext": BASE64.encode(key)})).unwrap();
        let error = super::grant(KEY, no_blob).unwrap_err();
        assert!(error.to_string().contains("CiphertextBlob"), "{error}");
    }

    #[test]
    fn the_request_uses_the_wire_names() {
        let request = GenerateDataKey {
            key_id: KEY,
            number_of_bytes: DATA_KEY_LEN,
            encryption_context: encryption_context("s", "ecs:t", None),
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["KeyId"], KEY);
        assert_eq!(value["NumberOfBytes"], DATA_KEY_LEN);
        assert_eq!(value["EncryptionContext"]["aws:ssm:SessionId"], "s");
    }

    #[test]
    fn failed_calls_map_to_kms_errors() {
        assert!(matches!(
            from_call(KEY, CallError::Credentials("none".into())),
            KmsError::NoCredentials { .. }
        ));
        assert!(matches!(
            from_call(KEY, CallError::Unreachable("refused".into())),
            KmsError::Unavailable { .. }
        ));
        let denied = from_call(
            KEY,
            CallError::Service {
                status: 400,
                aws: info("AccessDeniedException", "no"),
            },
        );
        assert!(matches!(denied, KmsError::GenerateDataKeyDenied { .. }));
    }

    #[tokio::test]
    async fn a_missing_runtime_id_is_a_clear_error() {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let api = KmsApi::new(&config, &AwsSettings::default());
        let target = Target {
            cluster_name: "arn:aws:ecs:us-east-1:1:cluster/secure".to_owned(),
            task_id: "t1".to_owned(),
            task_arn: "arn:aws:ecs:us-east-1:1:task/secure/t1".to_owned(),
            container_name: "app".to_owned(),
            runtime_id: None,
        };
        let keys = api.session_keys("s1", &target);
        let request = DataKeyRequest {
            key_id: KEY.to_owned(),
            challenge: None,
        };
        let error = keys.generate(request).await.expect_err("no runtime id");
        assert!(matches!(error, KmsError::NoRuntimeId { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("runtimeId") && text.contains("app") && text.contains("t1"));
    }
}
