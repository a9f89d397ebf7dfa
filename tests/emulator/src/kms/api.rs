//! The KMS JSON 1.1 operations (`X-Amz-Target: TrentService.*`): GenerateDataKey, Decrypt and
//! DescribeKey, with AWS's request and response shapes (blobs in base64) and error codes.
//!
//! Input is an already-authenticated request; output is JSON or an [`ApiError`] that the
//! server sends as `400 {"__type", "message"}` with `x-amzn-ErrorType`. No HTTP here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{EncryptionContext, Kms, KmsError};
use crate::api::ApiError;
use crate::config::CredentialsConfig;

/// `X-Amz-Target` prefix of KMS operations.
pub const KMS_TARGET_PREFIX: &str = "TrentService.";

/// The KMS operations the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsOperation {
    /// GenerateDataKey.
    GenerateDataKey,
    /// Decrypt.
    Decrypt,
    /// DescribeKey.
    DescribeKey,
}

impl KmsOperation {
    /// Parses an `X-Amz-Target` header value.
    pub fn from_target(target: &str) -> Option<Self> {
        match target.strip_prefix(KMS_TARGET_PREFIX)? {
            "GenerateDataKey" => Some(Self::GenerateDataKey),
            "Decrypt" => Some(Self::Decrypt),
            "DescribeKey" => Some(Self::DescribeKey),
            _ => None,
        }
    }

    /// The IAM action, as AccessDeniedException spells it.
    pub fn iam_action(self) -> &'static str {
        match self {
            Self::GenerateDataKey => "kms:GenerateDataKey",
            Self::Decrypt => "kms:Decrypt",
            Self::DescribeKey => "kms:DescribeKey",
        }
    }
}

impl From<KmsError> for ApiError {
    fn from(error: KmsError) -> Self {
        ApiError::client(error.aws_code(), error.to_string())
    }
}

/// The principal ARN an identity's AccessDeniedException names.
pub fn user_arn(kms: &Kms) -> String {
    format!("arn:aws:iam::{}:user/emulator", kms.account_id())
}

/// Runs one operation for an authenticated identity.
pub fn handle(
    kms: &Kms,
    operation: KmsOperation,
    identity: &CredentialsConfig,
    body: &[u8],
) -> Result<Value, ApiError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    let denied = |key_arn: &str| -> Result<(), ApiError> {
        if identity.deny.iter().any(|d| d == operation.iam_action()) {
            return Err(KmsError::AccessDenied {
                principal: user_arn(kms),
                action: operation.iam_action().to_string(),
                key_arn: key_arn.to_string(),
            }
            .into());
        }
        Ok(())
    };
    match operation {
        KmsOperation::GenerateDataKey => {
            let request: GenerateDataKeyRequest = parse(body)?;
            let bytes = data_key_length(request.number_of_bytes, request.key_spec.as_deref())?;
            let key_id = required(request.key_id, "keyId")?;
            denied(&kms.resolve(&key_id)?.arn)?;
            let key = kms.generate_data_key(&key_id, bytes, &request.encryption_context)?;
            Ok(json!({
                "CiphertextBlob": BASE64.encode(&key.ciphertext_blob),
                "Plaintext": BASE64.encode(&key.plaintext),
                "KeyId": key.key_arn,
            }))
        }
        KmsOperation::Decrypt => {
            let request: DecryptRequest = parse(body)?;
            if let Some(algorithm) = &request.encryption_algorithm
                && algorithm != "SYMMETRIC_DEFAULT"
            {
                return Err(KmsError::Validation(format!(
                    "1 validation error detected: Value '{algorithm}' at 'encryptionAlgorithm' failed to satisfy constraint"
                ))
                .into());
            }
            let blob = required(request.ciphertext_blob, "ciphertextBlob")?;
            let blob = BASE64
                .decode(blob.as_bytes())
                .map_err(|_| serialization("CiphertextBlob is not valid base64"))?;
            if let Some(key) = &request.key_id {
                denied(&kms.resolve(key)?.arn)?;
            } else if identity.deny.iter().any(|d| d == operation.iam_action()) {
                // The key comes from the blob; name it if the blob is one of ours.
                let arn = super::split_blob(&blob).map_or("*", |(arn, _, _)| arn);
                denied(arn)?;
            }
            let (key_arn, plaintext) = kms.decrypt(
                &blob,
                &request.encryption_context,
                request.key_id.as_deref(),
            )?;
            Ok(json!({
                "KeyId": key_arn,
                "Plaintext": BASE64.encode(&plaintext),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        KmsOperation::DescribeKey => {
            let request: DescribeKeyRequest = parse(body)?;
            let key_id = required(request.key_id, "keyId")?;
            let key = kms.resolve(&key_id)?;
            denied(&key.arn)?;
            Ok(json!({"KeyMetadata": {
                "AWSAccountId": kms.account_id(),
                "KeyId": key.key_id,
                "Arn": key.arn,
                "CreationDate": 1_704_067_200.0,
                "Enabled": key.enabled,
                "Description": "",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeyState": if key.enabled { "Enabled" } else { "Disabled" },
                "Origin": "AWS_KMS",
                "KeyManager": "CUSTOMER",
                "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
                "MultiRegion": false,
            }}))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateDataKeyRequest {
    key_id: Option<String>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptRequest {
    ciphertext_blob: Option<String>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeKeyRequest {
    key_id: Option<String>,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| serialization(&format!("Unable to parse the request body: {e}")))
}

fn serialization(message: &str) -> ApiError {
    ApiError::client("SerializationException", message)
}

fn required(value: Option<String>, name: &str) -> Result<String, ApiError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        KmsError::Validation(format!(
            "1 validation error detected: Value null at '{name}' failed to satisfy constraint: Member must not be null"
        ))
        .into()
    })
}

/// NumberOfBytes or KeySpec, exactly one of them, as KMS requires.
fn data_key_length(
    number_of_bytes: Option<i64>,
    key_spec: Option<&str>,
) -> Result<usize, ApiError> {
    let validation = |message: String| Err(KmsError::Validation(message).into());
    match (number_of_bytes, key_spec) {
        (Some(_), Some(_)) => {
            validation("Please specify either number of bytes or key spec.".into())
        }
        (None, None) => validation("Please specify either number of bytes or key spec.".into()),
        (Some(n), None) => match usize::try_from(n) {
            Ok(n @ 1..=super::MAX_DATA_KEY_BYTES) => Ok(n),
            _ => validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and {}",
                super::MAX_DATA_KEY_BYTES
            )),
        },
        (None, Some("AES_256")) => Ok(32),
        (None, Some("AES_128")) => Ok(16),
        (None, Some(other)) => validation(format!(
            "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_KMS_KEY_ARN};

    fn setup() -> (Kms, CredentialsConfig) {
        let config = Config::default();
        (Kms::from_config(&config), config.credentials[0].clone())
    }

    fn call(
        kms: &Kms,
        who: &CredentialsConfig,
        op: KmsOperation,
        body: Value,
    ) -> Result<Value, ApiError> {
        handle(kms, op, who, body.to_string().as_bytes())
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            KmsOperation::from_target("TrentService.GenerateDataKey"),
            Some(KmsOperation::GenerateDataKey)
        );
        assert_eq!(KmsOperation::from_target("TrentService.Encrypt"), None);
        assert_eq!(KmsOperation::from_target("Decrypt"), None);
    }

    #[test]
    fn generate_then_decrypt_through_json() {
        let (kms, who) = setup();
        let ctx = json!({"aws:ssm:SessionId": "s", "aws:ssm:TargetId": "ecs:a_b_c"});
        let out = call(
            &kms,
            &who,
            KmsOperation::GenerateDataKey,
            json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64, "EncryptionContext": ctx}),
        )
        .unwrap();
        assert_eq!(out["KeyId"], DEFAULT_KMS_KEY_ARN);
        let plaintext = BASE64.decode(out["Plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(plaintext.len(), 64);
        let decrypted = call(
            &kms,
            &who,
            KmsOperation::Decrypt,
            json!({"CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": ctx}),
        )
        .unwrap();
        assert_eq!(decrypted["Plaintext"], out["Plaintext"]);
        assert_eq!(decrypted["KeyId"], DEFAULT_KMS_KEY_ARN);
        let wrong = call(
            &kms,
            &who,
            KmsOperation::Decrypt,
            json!({"CiphertextBlob": out["CiphertextBlob"], "EncryptionContext": {"aws:ssm:SessionId": "s"}}),
        )
        .unwrap_err();
        assert_eq!(wrong.code, "InvalidCiphertextException");
    }

    #[test]
    fn parameters_are_validated() {
        let (kms, who) = setup();
        let code = |body| {
            call(&kms, &who, KmsOperation::GenerateDataKey, body)
                .unwrap_err()
                .code
        };
        assert_eq!(code(json!({"NumberOfBytes": 64})), "ValidationException");
        assert_eq!(
            code(json!({"KeyId": DEFAULT_KMS_KEY_ARN})),
            "ValidationException"
        );
        assert_eq!(
            code(json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 2000})),
            "ValidationException"
        );
        assert_eq!(
            code(json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64, "KeySpec": "AES_256"})),
            "ValidationException"
        );
        assert_eq!(
            code(json!({"KeyId": "nope", "KeySpec": "AES_256"})),
            "NotFoundException"
        );
        assert_eq!(code(json!({"KeyId": 5})), "SerializationException");
        let decrypt = call(
            &kms,
            &who,
            KmsOperation::Decrypt,
            json!({"CiphertextBlob": "AAAA"}),
        );
        assert_eq!(decrypt.unwrap_err().code, "InvalidCiphertextException");
    }

    #[test]
    fn denied_actions_name_the_action_and_key() {
        let (kms, mut who) = setup();
        who.deny = vec!["kms:GenerateDataKey".into()];
        let err = call(
            &kms,
            &who,
            KmsOperation::GenerateDataKey,
            json!({"KeyId": DEFAULT_KMS_KEY_ARN, "NumberOfBytes": 64}),
        )
        .unwrap_err();
        assert_eq!(err.code, "AccessDeniedException");
        assert!(
            err.message.contains("kms:GenerateDataKey"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains(&format!("on resource: {DEFAULT_KMS_KEY_ARN}"))
        );
        let described = call(
            &kms,
            &who,
            KmsOperation::DescribeKey,
            json!({"KeyId": DEFAULT_KMS_KEY_ARN}),
        )
        .unwrap();
        assert_eq!(described["KeyMetadata"]["KeyState"], "Enabled");
    }
}
