//! Where ECS Exec logs sessions, for `ecs-exec doctor`: CloudWatch Logs DescribeLogGroups (AWS
//! JSON 1.1, `X-Amz-Target: Logs_20140328.DescribeLogGroups`, SigV4 service `logs`) and S3
//! GetBucketEncryption (REST, path-style `GET /BUCKET?encryption`, SigV4 service `s3`, XML).
//!
//! The groups and buckets that exist are [`Config::log_groups`] and [`Config::s3_buckets`]. An
//! identity whose `deny` lists `logs:DescribeLogGroups` or `s3:GetEncryptionConfiguration` is
//! refused the way AWS refuses it. Pure: the server verifies the signature first.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::config::{Config, CredentialsConfig, LogGroupConfig};

/// The `X-Amz-Target` prefix of CloudWatch Logs.
pub const LOGS_TARGET_PREFIX: &str = "Logs_20140328.";
/// The one CloudWatch Logs operation served.
pub const DESCRIBE_LOG_GROUPS_TARGET: &str = "Logs_20140328.DescribeLogGroups";
/// The IAM action of DescribeLogGroups.
pub const DESCRIBE_LOG_GROUPS_ACTION: &str = "logs:DescribeLogGroups";
/// The IAM action of GetBucketEncryption.
pub const GET_ENCRYPTION_ACTION: &str = "s3:GetEncryptionConfiguration";
/// Most groups one DescribeLogGroups page holds (and its default `limit`), as in AWS.
const MAX_LOG_GROUPS_PER_PAGE: usize = 50;

/// The caller's ARN, as AWS names it in an AccessDenied message.
fn caller_arn(config: &Config, identity: &CredentialsConfig) -> String {
    let index = config
        .credentials
        .iter()
        .position(|c| c.access_key_id == identity.access_key_id)
        .unwrap_or(0);
    crate::iam::user_arn(&config.account_id, index)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeLogGroupsRequest {
    #[serde(default)]
    log_group_name_prefix: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    next_token: Option<String>,
}

/// CloudWatch Logs DescribeLogGroups: the groups whose name starts with `logGroupNamePrefix`,
/// sorted by name, `limit` (at most 50) per page, with `kmsKeyId` on an encrypted group.
pub fn describe_log_groups(
    config: &Config,
    identity: &CredentialsConfig,
    body: &[u8],
) -> Result<Value, ApiError> {
    if identity
        .deny
        .iter()
        .any(|d| d == DESCRIBE_LOG_GROUPS_ACTION)
    {
        return Err(ApiError::client(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: {DESCRIBE_LOG_GROUPS_ACTION} on resource: arn:aws:logs:{}:{}:log-group::log-stream: because no identity-based policy allows the {DESCRIBE_LOG_GROUPS_ACTION} action",
                caller_arn(config, identity),
                config.region,
                config.account_id
            ),
        ));
    }
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    let request: DescribeLogGroupsRequest = serde_json::from_slice(body).map_err(|_| {
        ApiError::client(
            "SerializationException",
            "The request body is not a valid DescribeLogGroups request.",
        )
    })?;
    let limit = request.limit.unwrap_or(MAX_LOG_GROUPS_PER_PAGE);
    if !(1..=MAX_LOG_GROUPS_PER_PAGE).contains(&limit) {
        return Err(ApiError::client(
            "InvalidParameterException",
            "1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value less than or equal to 50",
        ));
    }
    let start = match &request.next_token {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| {
            ApiError::client(
                "InvalidParameterException",
                "The specified nextToken is invalid.",
            )
        })?,
    };
    let prefix = request.log_group_name_prefix.unwrap_or_default();
    let mut matching: Vec<&LogGroupConfig> = config
        .log_groups
        .iter()
        .filter(|group| group.name.starts_with(&prefix))
        .collect();
    matching.sort_by(|a, b| a.name.cmp(&b.name));
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|group| log_group_json(config, group))
        .collect();
    let mut answer = json!({ "logGroups": page });
    if start + limit < matching.len() {
        answer["nextToken"] = json!((start + limit).to_string());
    }
    Ok(answer)
}

fn log_group_json(config: &Config, group: &LogGroupConfig) -> Value {
    let arn = format!(
        "arn:aws:logs:{}:{}:log-group:{}",
        config.region, config.account_id, group.name
    );
    let mut value = json!({
        "logGroupName": group.name,
        "creationTime": 1_700_000_000_000_u64,
        "metricFilterCount": 0,
        "arn": format!("{arn}:*"),
        "storedBytes": 0,
        "logGroupClass": "STANDARD",
        "logGroupArn": arn,
    });
    if let Some(key) = &group.kms_key_id {
        value["kmsKeyId"] = json!(key);
    }
    value
}

/// An S3 answer: HTTP status and XML body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Answer {
    /// HTTP status.
    pub status: u16,
    /// The XML document.
    pub body: String,
}

impl S3Answer {
    /// An S3 `<Error>` document.
    pub fn error(
        status: u16,
        code: &str,
        message: &str,
        bucket: Option<&str>,
        request_id: &str,
    ) -> Self {
        let bucket = bucket
            .map(|name| format!("<BucketName>{}</BucketName>", escape(name)))
            .unwrap_or_default();
        S3Answer {
            status,
            body: format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>{bucket}<RequestId>{request_id}</RequestId><HostId>emulator</HostId></Error>",
                escape(message)
            ),
        }
    }

    /// What S3 answers to a request whose signature the server refused (`code` is the JSON
    /// APIs' name for the failure, see [`crate::sigv4::SigV4Error::aws_code`]).
    pub fn signature_error(code: &str, message: &str, request_id: &str) -> Self {
        let (status, code) = match code {
            "MissingAuthenticationTokenException" => (403, "AccessDenied"),
            "UnrecognizedClientException" => (403, "InvalidAccessKeyId"),
            "IncompleteSignatureException" => (400, "AuthorizationHeaderMalformed"),
            _ => (403, "SignatureDoesNotMatch"),
        };
        S3Answer::error(status, code, message, None, request_id)
    }
}

/// The bucket of a path-style `GET /BUCKET?encryption` (the query holds `encryption`), or None
/// when the request is something else.
pub fn bucket_encryption_request<'p>(path: &'p str, query: Option<&str>) -> Option<&'p str> {
    let wants_encryption = query?
        .split('&')
        .any(|pair| pair.split('=').next() == Some("encryption"));
    let bucket = path.strip_prefix('/')?;
    (wants_encryption && !bucket.is_empty() && !bucket.contains('/')).then_some(bucket)
}

/// S3 GetBucketEncryption of `bucket`: its default encryption rule, `NoSuchBucket`, or
/// `ServerSideEncryptionConfigurationNotFoundError` for a bucket without default encryption.
pub fn get_bucket_encryption(
    config: &Config,
    identity: &CredentialsConfig,
    bucket: &str,
    request_id: &str,
) -> S3Answer {
    if identity.deny.iter().any(|d| d == GET_ENCRYPTION_ACTION) {
        let message = format!(
            "User: {} is not authorized to perform: {GET_ENCRYPTION_ACTION} on resource: \"arn:aws:s3:::{bucket}\" because no identity-based policy allows the {GET_ENCRYPTION_ACTION} action",
            caller_arn(config, identity)
        );
        return S3Answer::error(403, "AccessDenied", &message, None, request_id);
    }
    let Some(found) = config.s3_buckets.iter().find(|b| b.name == bucket) else {
        return S3Answer::error(
            404,
            "NoSuchBucket",
            "The specified bucket does not exist",
            Some(bucket),
            request_id,
        );
    };
    let Some(algorithm) = &found.sse_algorithm else {
        return S3Answer::error(
            404,
            "ServerSideEncryptionConfigurationNotFoundError",
            "The server side encryption configuration was not found",
            Some(bucket),
            request_id,
        );
    };
    let key = found
        .kms_key_id
        .as_ref()
        .map(|key| format!("<KMSMasterKeyID>{}</KMSMasterKeyID>", escape(key)))
        .unwrap_or_default();
    S3Answer {
        status: 200,
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ServerSideEncryptionConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>{}</SSEAlgorithm>{key}</ApplyServerSideEncryptionByDefault><BucketKeyEnabled>false</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>",
            escape(algorithm)
        ),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::S3BucketConfig;

    fn world() -> Config {
        let mut config = Config::default();
        for (name, key) in [
            (
                "/ecs/exec",
                Some("arn:aws:kms:us-east-1:123456789012:key/k"),
            ),
            ("/ecs/exec-plain", None),
            ("/other", None),
        ] {
            config.log_groups.push(LogGroupConfig {
                name: name.into(),
                kms_key_id: key.map(str::to_owned),
            });
        }
        config.s3_buckets = vec![
            S3BucketConfig {
                name: "sealed".into(),
                sse_algorithm: Some("aws:kms".into()),
                kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
            },
            S3BucketConfig {
                name: "open".into(),
                sse_algorithm: None,
                kms_key_id: None,
            },
        ];
        config
    }

    #[test]
    fn log_groups_are_listed_by_prefix_with_their_key() {
        let config = world();
        let out = describe_log_groups(
            &config,
            &config.credentials[0],
            br#"{"logGroupNamePrefix": "/ecs/exec"}"#,
        )
        .unwrap();
        let groups = out["logGroups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["logGroupName"], "/ecs/exec");
        assert_eq!(
            groups[0]["kmsKeyId"],
            "arn:aws:kms:us-east-1:123456789012:key/k"
        );
        assert!(groups[1].get("kmsKeyId").is_none());
        assert!(out.get("nextToken").is_none());
    }

    #[test]
    fn log_groups_page_with_limit_and_next_token() {
        let config = world();
        let who = &config.credentials[0];
        let first = describe_log_groups(&config, who, br#"{"limit": 2}"#).unwrap();
        assert_eq!(first["logGroups"].as_array().unwrap().len(), 2);
        let token = first["nextToken"].as_str().unwrap();
        let rest = describe_log_groups(
            &config,
            who,
            format!(r#"{{"limit": 2, "nextToken": "{token}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(rest["logGroups"][0]["logGroupName"], "/other");
        assert!(rest.get("nextToken").is_none());
        for bad in [&br#"{"limit": 51}"#[..], br#"{"nextToken": "x"}"#, b"[1]"] {
            assert!(describe_log_groups(&config, who, bad).is_err());
        }
    }

    #[test]
    fn a_denied_caller_gets_access_denied() {
        let mut config = world();
        config.credentials[0].deny = vec![
            DESCRIBE_LOG_GROUPS_ACTION.into(),
            GET_ENCRYPTION_ACTION.into(),
        ];
        let who = &config.credentials[0];
        let error = describe_log_groups(&config, who, b"{}").unwrap_err();
        assert_eq!(error.code, "AccessDeniedException");
        assert!(error.message.contains("logs:DescribeLogGroups"));
        let answer = get_bucket_encryption(&config, who, "sealed", "r");
        assert_eq!(answer.status, 403);
        assert!(answer.body.contains("<Code>AccessDenied</Code>"));
    }

    #[test]
    fn bucket_encryption_is_the_rule_or_the_s3_error() {
        let config = world();
        let who = &config.credentials[0];
        let sealed = get_bucket_encryption(&config, who, "sealed", "r");
        assert_eq!(sealed.status, 200);
        assert!(sealed.body.contains("<SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>arn:aws:kms:us-east-1:123456789012:key/k</KMSMasterKeyID>"));
        let open = get_bucket_encryption(&config, who, "open", "r");
        assert_eq!(open.status, 404);
        assert!(
            open.body
                .contains("<Code>ServerSideEncryptionConfigurationNotFoundError</Code>")
        );
        let missing = get_bucket_encryption(&config, who, "nope", "r");
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains("<Code>NoSuchBucket</Code>"));
        assert!(missing.body.contains("<BucketName>nope</BucketName>"));
    }

    #[test]
    fn only_bucket_encryption_gets_are_s3_requests() {
        assert_eq!(
            bucket_encryption_request("/logs", Some("encryption")),
            Some("logs")
        );
        assert_eq!(
            bucket_encryption_request("/logs", Some("encryption=")),
            Some("logs")
        );
        assert_eq!(bucket_encryption_request("/logs", None), None);
        assert_eq!(bucket_encryption_request("/logs", Some("acl")), None);
        assert_eq!(bucket_encryption_request("/", Some("encryption")), None);
        assert_eq!(
            bucket_encryption_request("/logs/key", Some("encryption")),
            None
        );
    }

    #[test]
    fn signature_failures_use_the_s3_codes() {
        let answer = S3Answer::signature_error("InvalidSignatureException", "bad <sig>", "r");
        assert_eq!(answer.status, 403);
        assert!(answer.body.contains("<Code>SignatureDoesNotMatch</Code>"));
        assert!(answer.body.contains("bad &lt;sig&gt;"));
        assert_eq!(
            S3Answer::signature_error("UnrecognizedClientException", "", "r").status,
            403
        );
    }
}
