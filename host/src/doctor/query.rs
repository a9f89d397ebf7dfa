//! STS GetCallerIdentity and IAM SimulatePrincipalPolicy, the two AWS Query protocol calls of
//! `ecs-exec doctor` (form-encoded `POST`, XML answer), signed by [`crate::signed_http`] rather
//! than through aws-sdk-sts and aws-sdk-iam, which would add megabytes for two operations.
//!
//! The XML answers have a fixed, flat shape, so the few elements needed are read by name
//! ([`element_texts`]); nothing else of the document is interpreted.

use aws_config::SdkConfig;
use bytes::Bytes;

use super::checks::{Decisions, Identity};
use crate::signed_http::{self, Post, SignedHttp, SignedHttpError};

/// A GetCallerIdentity or SimulatePrincipalPolicy answer is a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a call made without an SDK failed (the Query calls here, the JSON and REST ones of
/// [`super::log_destinations`]). Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error(transparent)]
    Http(#[from] SignedHttpError),
    #[error("HTTP {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unreadable answer: {0}")]
    Malformed(String),
}

impl QueryError {
    /// Whether AWS refused the call for lack of permission.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, QueryError::Api { code, .. } if code == "AccessDenied" || code == "AccessDeniedException")
    }
}

/// The STS and IAM endpoints and the signer.
#[derive(Clone, Debug)]
pub struct QueryApi {
    http: SignedHttp,
    region: String,
    sts_endpoint: String,
    iam_endpoint: String,
    iam_region: String,
}

impl QueryApi {
    /// From the process's `SdkConfig`: `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL_IAM`, else
    /// the process-wide endpoint, else the regional STS endpoint and the global IAM one.
    pub fn new(config: &SdkConfig) -> Option<QueryApi> {
        let region = config.region()?.to_string();
        let env = |name: &str| std::env::var(name).ok();
        let suffix = signed_http::dns_suffix(&region);
        let (iam_host, iam_region) = if region.starts_with("cn-") {
            (format!("https://iam.cn-north-1.{suffix}"), "cn-north-1")
        } else {
            (format!("https://iam.{suffix}"), "us-east-1")
        };
        Some(QueryApi {
            http: SignedHttp::new(config)?,
            sts_endpoint: signed_http::endpoint(
                env("AWS_ENDPOINT_URL_STS").as_deref(),
                config.endpoint_url(),
                format!("https://sts.{region}.{suffix}"),
            ),
            iam_endpoint: signed_http::endpoint(
                env("AWS_ENDPOINT_URL_IAM").as_deref(),
                config.endpoint_url(),
                iam_host,
            ),
            iam_region: iam_region.to_owned(),
            region,
        })
    }

    /// The credentials provider the calls are signed with.
    pub fn http(&self) -> &SignedHttp {
        &self.http
    }

    /// STS GetCallerIdentity.
    pub async fn get_caller_identity(&self) -> Result<Identity, QueryError> {
        let xml = self
            .call(
                &self.sts_endpoint,
                "sts",
                &self.region,
                &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
            )
            .await?;
        let first = |tag: &str| element_texts(&xml, tag).into_iter().next();
        match (first("Arn"), first("Account")) {
            (Some(arn), Some(account)) => Ok(Identity { arn, account }),
            _ => Err(QueryError::Malformed("no Arn or Account".to_owned())),
        }
    }

    /// IAM SimulatePrincipalPolicy of each action on its resource, for `principal`.
    pub async fn simulate(
        &self,
        principal: &str,
        actions: &[(&str, &str)],
    ) -> Result<Decisions, QueryError> {
        let mut decisions = Vec::with_capacity(actions.len());
        for (action, resource) in actions {
            let xml = self
                .call(
                    &self.iam_endpoint,
                    "iam",
                    &self.iam_region,
                    &[
                        ("Action", "SimulatePrincipalPolicy"),
                        ("Version", "2010-05-08"),
                        ("PolicySourceArn", principal),
                        ("ActionNames.member.1", action),
                        ("ResourceArns.member.1", resource),
                    ],
                )
                .await?;
            let decision = parse_decisions(&xml)
                .into_iter()
                .find(|(name, _)| name.as_str() == *action)
                .map(|(_, decision)| decision)
                .ok_or_else(|| QueryError::Malformed(format!("no decision for {action}")))?;
            decisions.push(((*action).to_owned(), decision));
        }
        Ok(decisions)
    }

    async fn call(
        &self,
        endpoint: &str,
        service: &str,
        region: &str,
        params: &[(&str, &str)],
    ) -> Result<String, QueryError> {
        let body = Bytes::from(form_encode(params));
        let answer = self
            .http
            .post(Post {
                endpoint,
                service,
                region,
                headers: &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body,
                max_response: MAX_RESPONSE_BYTES,
            })
            .await?;
        let xml = String::from_utf8_lossy(&answer.body).into_owned();
        if (200..300).contains(&answer.status) {
            return Ok(xml);
        }
        let first = |tag: &str| element_texts(&xml, tag).into_iter().next();
        Err(QueryError::Api {
            status: answer.status,
            code: first("Code").unwrap_or_else(|| "UnknownError".to_owned()),
            message: first("Message").unwrap_or_default(),
        })
    }
}

/// `name=value&…`, percent-encoded as SigV4 expects (unreserved characters kept).
pub fn form_encode(params: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    params
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The text of every `<tag>…</tag>` element, in document order, entities decoded.
pub fn element_texts(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut texts = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        texts.push(unescape(&after[..end]));
        rest = &after[end + close.len()..];
    }
    texts
}

/// Each evaluation result's action and decision. Every result has exactly one of each, in
/// this order, so they pair up even when MatchedStatements nest other `member`s.
pub fn parse_decisions(xml: &str) -> Vec<(String, String)> {
    element_texts(xml, "EvalActionName")
        .into_iter()
        .zip(element_texts(xml, "EvalDecision"))
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form_encode(&[("Action", "Simulate"), ("A.member.1", "ecs:Exec ute/x")]),
            "Action=Simulate&A.member.1=ecs%3AExec%20ute%2Fx"
        );
    }

    #[test]
    fn identity_and_errors_are_read_by_element() {
        let xml = "<GetCallerIdentityResponse xmlns=\"x\"><GetCallerIdentityResult><Arn>arn:aws:iam::1:user/a&amp;b</Arn><UserId>U</UserId><Account>1</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(element_texts(xml, "Arn"), ["arn:aws:iam::1:user/a&b"]);
        assert!(element_texts(xml, "Nope").is_empty());
        assert!(element_texts("<Arn>unterminated", "Arn").is_empty());
    }

    #[test]
    fn decisions_pair_up_past_nested_members() {
        let xml = "<EvaluationResults><member><EvalActionName>ecs:ExecuteCommand</EvalActionName><MatchedStatements><member><SourcePolicyId>p</SourcePolicyId></member></MatchedStatements><EvalDecision>allowed</EvalDecision></member><member><EvalActionName>kms:Decrypt</EvalActionName><EvalDecision>implicitDeny</EvalDecision></member></EvaluationResults>";
        assert_eq!(
            parse_decisions(xml),
            [
                ("ecs:ExecuteCommand".to_owned(), "allowed".to_owned()),
                ("kms:Decrypt".to_owned(), "implicitDeny".to_owned())
            ]
        );
    }
}
