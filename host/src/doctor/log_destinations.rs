//! Where the cluster logs ECS Exec sessions, as `ecs-exec doctor` checks it: CloudWatch Logs
//! DescribeLogGroups (AWS JSON 1.1, `X-Amz-Target: Logs_20140328.DescribeLogGroups`, SigV4
//! service `logs`) and S3 GetBucketEncryption (REST `GET ?encryption`, SigV4 service `s3`, XML),
//! signed by [`crate::signed_http`] rather than through aws-sdk-cloudwatchlogs and aws-sdk-s3,
//! which would add megabytes for two operations.
//!
//! The SSM agent reads the same two answers before a session when the cluster demands
//! encryption (README "Doctor"): a group counts as encrypted when DescribeLogGroups gives it a
//! `kmsKeyId`, a bucket when its first default-encryption rule is `AES256` or `aws:kms`. The
//! parsers here are pure; [`LogDestinationsApi`] only sends the requests.

use aws_config::SdkConfig;
use bytes::Bytes;

use super::checks::{BucketFacts, LogGroupFacts};
use super::query::{QueryError, element_texts};
use crate::signed_http::{self, Post, SignedHttp};

/// One DescribeLogGroups page (50 groups) or one GetBucketEncryption answer is a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 512 * 1024;
/// DescribeLogGroups pages read at most: the groups named by a prefix of the wanted name are
/// few, so more pages than this means something else is wrong.
const MAX_LOG_GROUP_PAGES: usize = 20;

/// The CloudWatch Logs and S3 endpoints and the signer.
#[derive(Clone, Debug)]
pub struct LogDestinationsApi {
    http: SignedHttp,
    region: String,
    logs_endpoint: String,
    /// `AWS_ENDPOINT_URL_S3` or the process-wide endpoint, used path-style; None: real S3.
    s3_endpoint: Option<String>,
}

impl LogDestinationsApi {
    /// From the process's `SdkConfig`: `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` / `AWS_ENDPOINT_URL_S3`,
    /// else the process-wide endpoint (`--endpoint-url` or `AWS_ENDPOINT_URL`), else AWS's
    /// regional endpoints.
    pub fn new(config: &SdkConfig, http: SignedHttp) -> Option<LogDestinationsApi> {
        let region = config.region()?.to_string();
        let env = |name: &str| std::env::var(name).ok();
        let suffix = signed_http::dns_suffix(&region);
        let logs_endpoint = signed_http::endpoint(
            env("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS").as_deref(),
            config.endpoint_url(),
            format!("https://logs.{region}.{suffix}"),
        );
        let s3_env = env("AWS_ENDPOINT_URL_S3");
        let given = |url: Option<&str>| url.is_some_and(|url| !url.trim().is_empty());
        let s3_endpoint = (given(s3_env.as_deref()) || given(config.endpoint_url())).then(|| {
            signed_http::endpoint(s3_env.as_deref(), config.endpoint_url(), String::new())
        });
        Some(LogDestinationsApi {
            http,
            region,
            logs_endpoint,
            s3_endpoint,
        })
    }

    /// Whether the log group `name` exists, and its KMS key.
    pub async fn log_group(&self, name: &str) -> Result<LogGroupFacts, QueryError> {
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_LOG_GROUP_PAGES {
            let mut request = serde_json::json!({ "logGroupNamePrefix": name, "limit": 50 });
            if let Some(token) = &next_token {
                request["nextToken"] = serde_json::json!(token);
            }
            let answer = self
                .http
                .post(Post {
                    endpoint: &self.logs_endpoint,
                    service: "logs",
                    region: &self.region,
                    headers: &[
                        ("content-type", "application/x-amz-json-1.1"),
                        ("x-amz-target", "Logs_20140328.DescribeLogGroups"),
                    ],
                    body: Bytes::from(request.to_string()),
                    max_response: MAX_RESPONSE_BYTES,
                })
                .await?;
            match parse_log_groups(answer.status, &answer.body, name)? {
                LogGroupPage::Found(facts) => return Ok(facts),
                LogGroupPage::More(token) => next_token = Some(token),
                LogGroupPage::End => return Ok(LogGroupFacts::Missing),
            }
        }
        Err(QueryError::Malformed(format!(
            "more than {MAX_LOG_GROUP_PAGES} pages of log groups start with {name}"
        )))
    }

    /// The default encryption of `bucket`, or that it does not exist. A bucket in another
    /// region than the session's is asked again there, as S3's answer names that region.
    pub async fn bucket(&self, bucket: &str) -> Result<BucketFacts, QueryError> {
        let answer = self.get_encryption(bucket, &self.region).await?;
        if self.s3_endpoint.is_none()
            && let Some(region) = region_elsewhere(&answer.body)
            && region != self.region
        {
            let answer = self.get_encryption(bucket, &region).await?;
            return parse_bucket_encryption(answer.status, &answer.body);
        }
        parse_bucket_encryption(answer.status, &answer.body)
    }

    async fn get_encryption(
        &self,
        bucket: &str,
        region: &str,
    ) -> Result<signed_http::Answer, QueryError> {
        let suffix = signed_http::dns_suffix(region);
        let url = match &self.s3_endpoint {
            Some(endpoint) => format!("{endpoint}{bucket}?encryption"),
            // Virtual-hosted style, as AWS recommends; a name with dots would not match the
            // wildcard certificate, so those go path-style to the same regional endpoint.
            None if bucket.contains('.') => {
                format!("https://s3.{region}.{suffix}/{bucket}?encryption")
            }
            None => format!("https://{bucket}.s3.{region}.{suffix}/?encryption"),
        };
        Ok(self.http.s3_get(&url, region, MAX_RESPONSE_BYTES).await?)
    }
}

/// The region S3 says the bucket is in, when it refused a request for being sent to the wrong
/// one: `<Region>` of AuthorizationHeaderMalformed, or the `s3.REGION.` of PermanentRedirect's
/// `<Endpoint>`.
pub fn region_elsewhere(body: &[u8]) -> Option<String> {
    let xml = String::from_utf8_lossy(body);
    let first = |tag: &str| element_texts(&xml, tag).into_iter().next();
    let region = match first("Code")?.as_str() {
        "AuthorizationHeaderMalformed" => first("Region")?,
        "PermanentRedirect" => {
            let host = format!(".{}", first("Endpoint")?);
            let (_, after) = host.rsplit_once(".s3.")?;
            after.split('.').next()?.to_owned()
        }
        _ => return None,
    };
    // Every region name has a dash (`eu-west-1`); the global `s3.amazonaws.com` names none.
    let plausible = region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plausible.then_some(region)
}

/// What one DescribeLogGroups page says about the wanted group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogGroupPage {
    Found(LogGroupFacts),
    /// Not on this page; the next one starts at this token.
    More(String),
    /// Not on any page.
    End,
}

/// Reads a DescribeLogGroups answer: the group named exactly `name` (the prefix search also
/// lists longer names), or where to look next; an error answer becomes [`QueryError::Api`].
pub fn parse_log_groups(status: u16, body: &[u8], name: &str) -> Result<LogGroupPage, QueryError> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        QueryError::Malformed(format!("HTTP {status} with a body that is not JSON"))
    })?;
    let text = |value: &serde_json::Value, field: &str| {
        value.get(field).and_then(|v| v.as_str()).map(str::to_owned)
    };
    if !(200..300).contains(&status) {
        let code = text(&json, "__type")
            .map(|kind| kind.rsplit('#').next().unwrap_or(&kind).to_owned())
            .unwrap_or_else(|| "UnknownError".to_owned());
        let message = text(&json, "message")
            .or_else(|| text(&json, "Message"))
            .unwrap_or_default();
        return Err(QueryError::Api {
            status,
            code,
            message,
        });
    }
    let groups = json
        .get("logGroups")
        .and_then(|groups| groups.as_array())
        .ok_or_else(|| QueryError::Malformed("DescribeLogGroups without logGroups".to_owned()))?;
    if let Some(group) = groups
        .iter()
        .find(|group| text(group, "logGroupName").as_deref() == Some(name))
    {
        return Ok(LogGroupPage::Found(LogGroupFacts::Found {
            kms_key_id: text(group, "kmsKeyId").filter(|key| !key.is_empty()),
        }));
    }
    Ok(match text(&json, "nextToken") {
        Some(token) if !token.is_empty() => LogGroupPage::More(token),
        _ => LogGroupPage::End,
    })
}

/// Reads a GetBucketEncryption answer: the first rule's algorithm and key;
/// `ServerSideEncryptionConfigurationNotFoundError` is a bucket without default encryption and
/// `NoSuchBucket` one that does not exist. Any other error becomes [`QueryError::Api`].
pub fn parse_bucket_encryption(status: u16, body: &[u8]) -> Result<BucketFacts, QueryError> {
    let xml = String::from_utf8_lossy(body);
    let first = |tag: &str| element_texts(&xml, tag).into_iter().next();
    if (200..300).contains(&status) {
        return Ok(match first("SSEAlgorithm") {
            Some(algorithm) => BucketFacts::Encrypted {
                algorithm,
                kms_key_id: first("KMSMasterKeyID").filter(|key| !key.is_empty()),
            },
            None => BucketFacts::Unencrypted,
        });
    }
    let code = first("Code").unwrap_or_else(|| "UnknownError".to_owned());
    match code.as_str() {
        "NoSuchBucket" => Ok(BucketFacts::Missing),
        "ServerSideEncryptionConfigurationNotFoundError" => Ok(BucketFacts::Unencrypted),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" => Err(QueryError::Api {
            status,
            code,
            message: match first("Region").or_else(|| first("Endpoint")) {
                Some(place) => format!("the bucket is in another region ({place})"),
                None => "the bucket is in another region".to_owned(),
            },
        }),
        _ => Err(QueryError::Api {
            status,
            message: first("Message").unwrap_or_default(),
            code,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_group_is_found_among_longer_names() {
        let body = br#"{"logGroups":[{"logGroupName":"/ecs/exec-old","kmsKeyId":"k0"},{"logGroupName":"/ecs/exec","arn":"arn:aws:logs:us-east-1:1:log-group:/ecs/exec:*","kmsKeyId":"arn:aws:kms:us-east-1:1:key/k"}]}"#;
        assert_eq!(
            parse_log_groups(200, body, "/ecs/exec").unwrap(),
            LogGroupPage::Found(LogGroupFacts::Found {
                kms_key_id: Some("arn:aws:kms:us-east-1:1:key/k".into())
            })
        );
        let plain = br#"{"logGroups":[{"logGroupName":"/ecs/exec"}]}"#;
        assert_eq!(
            parse_log_groups(200, plain, "/ecs/exec").unwrap(),
            LogGroupPage::Found(LogGroupFacts::Found { kms_key_id: None })
        );
    }

    #[test]
    fn a_group_not_on_the_page_is_looked_for_on_the_next() {
        let body = br#"{"logGroups":[{"logGroupName":"/ecs/exec-1"}],"nextToken":"t2"}"#;
        assert_eq!(
            parse_log_groups(200, body, "/ecs/exec").unwrap(),
            LogGroupPage::More("t2".into())
        );
        assert_eq!(
            parse_log_groups(200, br#"{"logGroups":[]}"#, "/ecs/exec").unwrap(),
            LogGroupPage::End
        );
    }

    #[test]
    fn log_errors_keep_their_code() {
        let denied = br#"{"__type":"com.amazonaws.logs#AccessDeniedException","message":"User: u is not authorized"}"#;
        let error = parse_log_groups(400, denied, "g").unwrap_err();
        assert!(error.is_access_denied(), "{error}");
        assert_eq!(
            error.to_string(),
            "HTTP 400: AccessDeniedException: User: u is not authorized"
        );
        assert!(matches!(
            parse_log_groups(200, b"<html>", "g"),
            Err(QueryError::Malformed(_))
        ));
        assert!(matches!(
            parse_log_groups(200, b"{}", "g"),
            Err(QueryError::Malformed(_))
        ));
    }

    #[test]
    fn bucket_encryption_is_read_from_the_first_rule() {
        let kms = b"<ServerSideEncryptionConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>arn:aws:kms:us-east-1:1:key/k</KMSMasterKeyID></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>";
        assert_eq!(
            parse_bucket_encryption(200, kms).unwrap(),
            BucketFacts::Encrypted {
                algorithm: "aws:kms".into(),
                kms_key_id: Some("arn:aws:kms:us-east-1:1:key/k".into())
            }
        );
        let aes = b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>";
        assert_eq!(
            parse_bucket_encryption(200, aes).unwrap(),
            BucketFacts::Encrypted {
                algorithm: "AES256".into(),
                kms_key_id: None
            }
        );
    }

    #[test]
    fn bucket_errors_say_missing_unencrypted_or_fail() {
        let error = |code: &str| {
            format!("<?xml version=\"1.0\"?>\n<Error><Code>{code}</Code><Message>m</Message><BucketName>b</BucketName></Error>").into_bytes()
        };
        assert_eq!(
            parse_bucket_encryption(404, &error("NoSuchBucket")).unwrap(),
            BucketFacts::Missing
        );
        assert_eq!(
            parse_bucket_encryption(
                404,
                &error("ServerSideEncryptionConfigurationNotFoundError")
            )
            .unwrap(),
            BucketFacts::Unencrypted
        );
        let denied = parse_bucket_encryption(403, &error("AccessDenied")).unwrap_err();
        assert!(denied.is_access_denied());
        let moved = parse_bucket_encryption(
            301,
            b"<Error><Code>PermanentRedirect</Code><Endpoint>b.s3.eu-west-1.amazonaws.com</Endpoint></Error>",
        )
        .unwrap_err();
        assert!(
            moved
                .to_string()
                .ends_with("the bucket is in another region (b.s3.eu-west-1.amazonaws.com)"),
            "{moved}"
        );
        assert!(parse_bucket_encryption(500, b"").is_err());
    }

    #[test]
    fn a_bucket_in_another_region_names_it() {
        assert_eq!(
            region_elsewhere(b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_elsewhere(b"<Error><Code>PermanentRedirect</Code><Endpoint>logs.s3.ap-south-1.amazonaws.com</Endpoint></Error>").as_deref(),
            Some("ap-south-1")
        );
        assert_eq!(
            region_elsewhere(b"<Error><Code>PermanentRedirect</Code><Endpoint>my-s3.logs.s3.eu-north-1.amazonaws.com</Endpoint></Error>").as_deref(),
            Some("eu-north-1")
        );
        assert_eq!(
            region_elsewhere(b"<Error><Code>PermanentRedirect</Code><Endpoint>logs.s3.amazonaws.com</Endpoint></Error>"),
            None
        );
        assert_eq!(
            region_elsewhere(b"<Error><Code>NoSuchBucket</Code></Error>"),
            None
        );
    }
}
