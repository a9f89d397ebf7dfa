//! AWS Signature Version 4 verification for the emulator's API requests.
//!
//! The canonical request is rebuilt from what actually arrived (method, path, query, the signed
//! headers, the body hash), the signing key is derived from the configured secret for the
//! credential scope, and the signature is compared in constant time. The scope's date, region
//! and service, the request time (15 minutes of skew, as AWS allows) and the optional session
//! token are checked too. Pure functions: the caller passes the current time. Never logs or
//! returns a secret.

use std::time::{Duration, SystemTime};

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::CredentialsConfig;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The only algorithm accepted.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request time may be from the server's clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// A request as far as SigV4 is concerned.
#[derive(Debug, Clone, Copy)]
pub struct RequestToVerify<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// Path exactly as received, e.g. `/`.
    pub path: &'a str,
    /// Query string without `?`, if any.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a http::HeaderMap,
    /// The body bytes.
    pub body: &'a [u8],
}

/// Why a signature was refused; each maps to the error AWS returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header at all.
    #[error("Missing Authentication Token")]
    MissingAuthentication,
    /// The header is there but malformed or lacks a part.
    #[error("{0}")]
    Incomplete(String),
    /// Unknown access key or wrong session token.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    /// Scope, time or signature do not match.
    #[error("{0}")]
    InvalidSignature(String),
}

impl SigV4Error {
    /// The AWS error code (`__type`) for this failure.
    pub fn aws_code(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthentication => "MissingAuthenticationTokenException",
            SigV4Error::Incomplete(_) => "IncompleteSignatureException",
            SigV4Error::UnrecognizedClient => "UnrecognizedClientException",
            SigV4Error::InvalidSignature(_) => "InvalidSignatureException",
        }
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug)]
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Verifies a request signed for `service` in `region` by one of `credentials`; returns the
/// identity that signed it.
pub fn verify<'c>(
    request: &RequestToVerify<'_>,
    credentials: &'c [CredentialsConfig],
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<&'c CredentialsConfig, SigV4Error> {
    let header = match request.headers.get(http::header::AUTHORIZATION) {
        None => return Err(SigV4Error::MissingAuthentication),
        Some(value) => value
            .to_str()
            .map_err(|_| SigV4Error::Incomplete("Authorization header is not ASCII".into()))?,
    };
    let auth = parse_authorization(header)?;
    let identity = credentials
        .iter()
        .find(|c| c.access_key_id == auth.access_key_id)
        .ok_or(SigV4Error::UnrecognizedClient)?;

    let presented_token = request
        .headers
        .get("x-amz-security-token")
        .map(|v| v.as_bytes());
    let token_ok = match (&identity.session_token, presented_token) {
        (None, None) => true,
        (Some(expected), Some(presented)) => constant_time_eq(expected.as_bytes(), presented),
        _ => false,
    };
    if !token_ok {
        return Err(SigV4Error::UnrecognizedClient);
    }

    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            SigV4Error::Incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                    .into(),
            )
        })?;
    let request_time = parse_amz_date(amz_date)
        .ok_or_else(|| SigV4Error::InvalidSignature(format!("Invalid X-Amz-Date: {amz_date}")))?;
    check_skew(amz_date, request_time, now)?;

    if auth.date.len() != 8 || !amz_date.starts_with(auth.date) {
        return Err(SigV4Error::InvalidSignature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            auth.date,
            amz_date.get(..8).unwrap_or(amz_date),
            amz_date
        )));
    }
    if auth.region != region {
        return Err(SigV4Error::InvalidSignature(format!(
            "Credential should be scoped to a valid region. '{}' is not valid; expecting '{region}'.",
            auth.region
        )));
    }
    if auth.service != service {
        return Err(SigV4Error::InvalidSignature(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(SigV4Error::InvalidSignature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }

    let canonical = canonical_request(request, &auth.signed_headers)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(
        &identity.secret_access_key,
        auth.date,
        auth.region,
        auth.service,
    )
    .ok_or_else(signature_mismatch)?;
    let presented = hex::decode(auth.signature).map_err(|_| signature_mismatch())?;
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(&key).map_err(|_| signature_mismatch())?;
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&presented)
        .map_err(|_| signature_mismatch())?;
    Ok(identity)
}

fn signature_mismatch() -> SigV4Error {
    SigV4Error::InvalidSignature(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
            .into(),
    )
}

fn parse_authorization(header: &str) -> Result<Authorization<'_>, SigV4Error> {
    let incomplete = |what: &str| {
        SigV4Error::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={header}"
        ))
    };
    let rest = header
        .strip_prefix(ALGORITHM)
        .filter(|rest| rest.starts_with(' '))
        .ok_or_else(|| {
            SigV4Error::Incomplete(format!(
                "Unsupported AWS 'algorithm': '{}'",
                header.split(' ').next().unwrap_or("")
            ))
        })?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            continue;
        };
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let mut parts = credential.split('/');
    let (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(SigV4Error::Incomplete(format!(
            "Credential should be scoped to a valid region, service and terminated by aws4_request. Credential={credential}"
        )));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

fn parse_amz_date(value: &str) -> Option<OffsetDateTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(value, &format)
        .ok()
        .map(|t| t.assume_utc())
}

fn format_amz_date(t: OffsetDateTime) -> String {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&format).unwrap_or_default()
}

fn check_skew(
    amz_date: &str,
    request_time: OffsetDateTime,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    let now = OffsetDateTime::from(now);
    let skew = time::Duration::try_from(MAX_SKEW).unwrap_or(time::Duration::minutes(15));
    if request_time < now - skew {
        return Err(SigV4Error::InvalidSignature(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
            format_amz_date(now - skew),
            format_amz_date(now)
        )));
    }
    if request_time > now + skew {
        return Err(SigV4Error::InvalidSignature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
            format_amz_date(now + skew),
            format_amz_date(now)
        )));
    }
    Ok(())
}

/// Rebuilds the canonical request (SigV4 step 1) from what was received.
fn canonical_request(
    request: &RequestToVerify<'_>,
    signed_headers: &[&str],
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256);
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_uri(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query.unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(*name)
            .iter()
            .map(|v| collapse_whitespace(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(signature_mismatch());
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    let body_hash = hex::encode(Sha256::digest(request.body));
    if let Some(declared) = request.headers.get("x-amz-content-sha256") {
        // A declared hash must describe the body that came, or the body could be swapped.
        if declared.as_bytes() != body_hash.as_bytes() {
            return Err(SigV4Error::InvalidSignature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ));
        }
    }
    out.push_str(&body_hash);
    Ok(out)
}

/// Non-S3 services encode each path segment once more on top of the client's encoding.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn uri_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) => {
                hex_value(h).zip(hex_value(l)).map(|(h, l)| h * 16 + l)
            }
            _ => None,
        };
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.extend_from_slice(bytes.get(i..i + 1).unwrap_or_default());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn collapse_whitespace(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Option<Vec<u8>> {
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes())?;
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes())?;
    }
    Some(key)
}

/// HMAC takes keys of any length, so this only returns `None` if that ever changed.
fn hmac_sha256(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().to_vec())
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The "get-vanilla" case of the public SigV4 test suite: a known-good signature computed
    // by AWS's own tooling, for service "service" in us-east-1.
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite_credentials() -> Vec<CredentialsConfig> {
        vec![CredentialsConfig {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SUITE_SECRET.into(),
            session_token: None,
            deny: vec![],
        }]
    }

    fn vanilla_headers(signature: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}")
                .parse()
                .unwrap(),
        );
        headers
    }

    fn vanilla_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    const VANILLA_SIGNATURE: &str =
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn vanilla(headers: &http::HeaderMap) -> RequestToVerify<'_> {
        RequestToVerify {
            method: "GET",
            path: "/",
            query: None,
            headers,
            body: b"",
        }
    }

    #[test]
    fn accepts_the_suite_vanilla_vector() {
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        let creds = suite_credentials();
        let who = verify(
            &vanilla(&headers),
            &creds,
            "us-east-1",
            "service",
            vanilla_time(),
        )
        .unwrap();
        assert_eq!(who.access_key_id, "AKIDEXAMPLE");
    }

    #[test]
    fn rejects_wrong_secret_and_tampering() {
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        let mut creds = suite_credentials();
        creds[0].secret_access_key = "not-the-secret".into();
        let err = verify(
            &vanilla(&headers),
            &creds,
            "us-east-1",
            "service",
            vanilla_time(),
        )
        .unwrap_err();
        assert_eq!(err.aws_code(), "InvalidSignatureException");

        let creds = suite_credentials();
        let mut request = vanilla(&headers);
        request.method = "POST";
        let err = verify(&request, &creds, "us-east-1", "service", vanilla_time()).unwrap_err();
        assert_eq!(err.aws_code(), "InvalidSignatureException");

        let mut flipped = VANILLA_SIGNATURE.to_string();
        flipped.replace_range(0..1, "6");
        let headers = vanilla_headers(&flipped);
        let err = verify(
            &vanilla(&headers),
            &creds,
            "us-east-1",
            "service",
            vanilla_time(),
        )
        .unwrap_err();
        assert_eq!(err.aws_code(), "InvalidSignatureException");
    }

    #[test]
    fn checks_scope_time_and_identity() {
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        let creds = suite_credentials();
        let request = vanilla(&headers);
        let region = verify(&request, &creds, "eu-west-1", "service", vanilla_time()).unwrap_err();
        assert!(region.to_string().contains("region"), "{region}");
        let service = verify(&request, &creds, "us-east-1", "ecs", vanilla_time()).unwrap_err();
        assert!(service.to_string().contains("service"), "{service}");
        let late = vanilla_time() + Duration::from_secs(16 * 60);
        let expired = verify(&request, &creds, "us-east-1", "service", late).unwrap_err();
        assert!(
            expired.to_string().starts_with("Signature expired"),
            "{expired}"
        );
        let early = vanilla_time() - Duration::from_secs(16 * 60);
        let future = verify(&request, &creds, "us-east-1", "service", early).unwrap_err();
        assert!(
            future.to_string().starts_with("Signature not yet current"),
            "{future}"
        );
        let within = vanilla_time() + Duration::from_secs(14 * 60);
        assert!(verify(&request, &creds, "us-east-1", "service", within).is_ok());

        let mut other = suite_credentials();
        other[0].access_key_id = "AKIDOTHER".into();
        assert_eq!(
            verify(&request, &other, "us-east-1", "service", vanilla_time()).unwrap_err(),
            SigV4Error::UnrecognizedClient
        );
    }

    #[test]
    fn session_token_must_match_when_configured() {
        let mut creds = suite_credentials();
        creds[0].session_token = Some("token-1".into());
        let headers = vanilla_headers(VANILLA_SIGNATURE);
        assert_eq!(
            verify(
                &vanilla(&headers),
                &creds,
                "us-east-1",
                "service",
                vanilla_time()
            )
            .unwrap_err(),
            SigV4Error::UnrecognizedClient
        );
        let mut with_token = vanilla_headers(VANILLA_SIGNATURE);
        with_token.insert("x-amz-security-token", "token-2".parse().unwrap());
        assert_eq!(
            verify(
                &vanilla(&with_token),
                &creds,
                "us-east-1",
                "service",
                vanilla_time()
            )
            .unwrap_err(),
            SigV4Error::UnrecognizedClient
        );
        // A token presented to an identity without one is refused as well.
        let creds = suite_credentials();
        assert_eq!(
            verify(
                &vanilla(&with_token),
                &creds,
                "us-east-1",
                "service",
                vanilla_time()
            )
            .unwrap_err(),
            SigV4Error::UnrecognizedClient
        );
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let creds = suite_credentials();
        let empty = http::HeaderMap::new();
        assert_eq!(
            verify(
                &vanilla(&empty),
                &creds,
                "us-east-1",
                "service",
                vanilla_time()
            )
            .unwrap_err(),
            SigV4Error::MissingAuthentication
        );
        for bad in [
            "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256",
            "",
        ] {
            let mut headers = vanilla_headers(VANILLA_SIGNATURE);
            headers.insert("authorization", bad.parse().unwrap());
            let err = verify(
                &vanilla(&headers),
                &creds,
                "us-east-1",
                "service",
                vanilla_time(),
            )
            .unwrap_err();
            assert_eq!(
                err.aws_code(),
                "IncompleteSignatureException",
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("x=a%20b&y"), "x=a%20b&y=");
        assert_eq!(canonical_query("%zz=1"), "%25zz=1");
        assert_eq!(canonical_uri("/v1/data channel"), "/v1/data%20channel");
    }
}
