//! The emulator's KMS: its keys, and data keys sealed so that only this emulator can open
//! them, bound to the key and to the exact encryption context.
//!
//! A ciphertext blob is `MAGIC ‖ u16 ARN length ‖ key ARN ‖ 12-byte nonce ‖ AES-256-GCM
//! ciphertext ‖ tag`, sealed under a master key drawn at random when the emulator starts and
//! never leaving it. The additional authenticated data is a canonical encoding of the key ARN
//! and the encryption context (sorted, every string length-prefixed), so Decrypt with any other
//! context (an entry extra, missing or changed) fails as KMS does: InvalidCiphertextException.
//! Sans-IO apart from the random numbers: [`api`] turns these calls into the JSON 1.1 API.

pub mod api;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

use crate::config::Config;

/// Start of every ciphertext blob this emulator makes.
const BLOB_MAGIC: &[u8; 4] = b"EEK\x01";
/// Domain separation of the additional authenticated data.
const AAD_LABEL: &[u8] = b"ecs-exec-emulator kms data key v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Largest data key GenerateDataKey makes, as in KMS.
pub const MAX_DATA_KEY_BYTES: usize = 1024;

/// An encryption context: string pairs, compared exactly.
pub type EncryptionContext = BTreeMap<String, String>;

/// A KMS failure, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// No such key (or alias).
    #[error("Key '{0}' does not exist")]
    NotFound(String),
    /// The key exists but is disabled.
    #[error("{0} is disabled.")]
    Disabled(String),
    /// The caller may not perform the action on the key.
    #[error(
        "User: {principal} is not authorized to perform: {action} on resource: {key_arn} because no identity-based policy allows the {action} action"
    )]
    AccessDenied {
        /// Who asked.
        principal: String,
        /// `kms:GenerateDataKey`, `kms:Decrypt`…
        action: String,
        /// The key.
        key_arn: String,
    },
    /// The blob is not one of ours, or the context (or key) does not match it.
    #[error(
        "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access."
    )]
    InvalidCiphertext,
    /// Decrypt named a key other than the one that sealed the blob.
    #[error("The key ID in the request does not identify a CMK that can perform this operation.")]
    IncorrectKey,
    /// A parameter is missing or out of range.
    #[error("{0}")]
    Validation(String),
}

impl KmsError {
    /// The `__type` AWS sends for this error.
    pub fn aws_code(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::AccessDenied { .. } => "AccessDeniedException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::Validation(_) => "ValidationException",
        }
    }
}

/// One key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`.
    pub arn: String,
    /// The `ID` part of the ARN.
    pub key_id: String,
    /// Whether it may be used.
    pub enabled: bool,
    /// `alias/NAME`, if it has one.
    pub alias: Option<String>,
}

/// A new data key.
pub struct DataKey {
    /// The ARN of the key that sealed it.
    pub key_arn: String,
    /// The plaintext key; never log it.
    pub plaintext: Vec<u8>,
    /// The sealed key.
    pub ciphertext_blob: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_arn", &self.key_arn)
            .field("plaintext", &"<redacted>")
            .field("ciphertext_blob_len", &self.ciphertext_blob.len())
            .finish()
    }
}

/// The keys and the sealing master key. Shared by the API and the agent.
pub struct Kms {
    region: String,
    account_id: String,
    keys: Vec<KmsKey>,
    master: Aes256Gcm,
    /// Plaintexts of every data key handed out, for tests that look for leaks.
    issued: Mutex<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("keys", &self.keys).finish()
    }
}

impl Kms {
    /// The keys a config describes (those of `[[kms.keys]]`, then those clusters name), with a
    /// fresh random master key.
    pub fn from_config(config: &Config) -> Self {
        let mut keys: Vec<KmsKey> = config
            .kms
            .keys
            .iter()
            .filter_map(|k| {
                let (_, _, key_id) = parse_key_arn(&k.arn)?;
                Some(KmsKey {
                    arn: k.arn.clone(),
                    key_id: key_id.to_string(),
                    enabled: k.enabled,
                    alias: k.alias.clone(),
                })
            })
            .collect();
        for named in config.clusters.iter().filter_map(|c| c.kms_key_id.as_ref()) {
            let arn = match parse_key_arn(named) {
                Some(_) => named.clone(),
                None => format!(
                    "arn:aws:kms:{}:{}:key/{named}",
                    config.region, config.account_id
                ),
            };
            if keys.iter().any(|k| k.arn == arn) {
                continue;
            }
            let key_id = parse_key_arn(&arn).map_or(named.as_str(), |(_, _, id)| id);
            keys.push(KmsKey {
                key_id: key_id.to_string(),
                arn,
                enabled: true,
                alias: None,
            });
        }
        let mut master = [0u8; 32];
        rand::fill(&mut master);
        Self {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            keys,
            master: Aes256Gcm::new(&master.into()),
            issued: Mutex::new(Vec::new()),
        }
    }

    /// Every key.
    pub fn keys(&self) -> &[KmsKey] {
        &self.keys
    }

    /// Finds a key by ARN, key id, alias (`alias/NAME`) or alias ARN.
    pub fn resolve(&self, reference: &str) -> Result<&KmsKey, KmsError> {
        let alias_arn_prefix = format!("arn:aws:kms:{}:{}:", self.region, self.account_id);
        self.keys
            .iter()
            .find(|k| {
                k.arn == reference
                    || k.key_id == reference
                    || k.alias.as_deref().is_some_and(|alias| {
                        alias == reference
                            || reference
                                .strip_prefix(&alias_arn_prefix)
                                .is_some_and(|rest| rest == alias)
                    })
            })
            .ok_or_else(|| {
                let shown = if reference.starts_with("arn:") || reference.starts_with("alias/") {
                    reference.to_string()
                } else {
                    format!(
                        "arn:aws:kms:{}:{}:key/{reference}",
                        self.region, self.account_id
                    )
                };
                KmsError::NotFound(shown)
            })
    }

    /// A usable key: found and enabled.
    fn usable(&self, reference: &str) -> Result<&KmsKey, KmsError> {
        let key = self.resolve(reference)?;
        if !key.enabled {
            return Err(KmsError::Disabled(key.arn.clone()));
        }
        Ok(key)
    }

    /// GenerateDataKey: `bytes` random bytes, returned in plaintext and sealed under `key`
    /// with `context`.
    pub fn generate_data_key(
        &self,
        key: &str,
        bytes: usize,
        context: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        if !(1..=MAX_DATA_KEY_BYTES).contains(&bytes) {
            return Err(KmsError::Validation(format!(
                "1 validation error detected: Value '{bytes}' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to {MAX_DATA_KEY_BYTES}"
            )));
        }
        let key = self.usable(key)?;
        let mut plaintext = vec![0u8; bytes];
        rand::fill(plaintext.as_mut_slice());
        let ciphertext_blob = self.seal(&key.arn, &plaintext, context)?;
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(plaintext.clone());
        Ok(DataKey {
            key_arn: key.arn.clone(),
            plaintext,
            ciphertext_blob,
        })
    }

    /// Decrypt: opens a blob sealed by this emulator with exactly `context`. When `key` is
    /// given, the blob must have been sealed under that key. Returns the key ARN and plaintext.
    pub fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        key: Option<&str>,
    ) -> Result<(String, Vec<u8>), KmsError> {
        let (arn, nonce, sealed) = split_blob(blob).ok_or(KmsError::InvalidCiphertext)?;
        if let Some(wanted) = key
            && self.resolve(wanted)?.arn != arn
        {
            return Err(KmsError::IncorrectKey);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.arn == arn)
            .ok_or(KmsError::InvalidCiphertext)?;
        if !key.enabled {
            return Err(KmsError::Disabled(key.arn.clone()));
        }
        let aad = associated_data(arn, context);
        let plaintext = self
            .master
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| KmsError::InvalidCiphertext)?;
        Ok((key.arn.clone(), plaintext))
    }

    fn seal(
        &self,
        arn: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>, KmsError> {
        let arn_len = u16::try_from(arn.len())
            .map_err(|_| KmsError::Validation("key ARN too long".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let aad = associated_data(arn, context);
        let sealed = self
            .master
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KmsError::Validation("data key too long".into()))?;
        let mut blob =
            Vec::with_capacity(BLOB_MAGIC.len() + 2 + arn.len() + NONCE_LEN + sealed.len());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(&arn_len.to_be_bytes());
        blob.extend_from_slice(arn.as_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// The plaintext of every data key GenerateDataKey returned so far.
    pub fn issued_data_keys(&self) -> Vec<Vec<u8>> {
        self.issued
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Region of the keys.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Account of the keys.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }
}

/// (key ARN, nonce, sealed data key) of a blob, if it has our shape.
fn split_blob(blob: &[u8]) -> Option<(&str, [u8; NONCE_LEN], &[u8])> {
    let rest = blob.strip_prefix(BLOB_MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (arn, rest) = rest.split_at_checked(len)?;
    let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
    if sealed.len() <= TAG_LEN {
        return None;
    }
    Some((std::str::from_utf8(arn).ok()?, *nonce, sealed))
}

/// The canonical encoding of key and context that a blob is bound to.
fn associated_data(arn: &str, context: &EncryptionContext) -> Vec<u8> {
    let mut out = AAD_LABEL.to_vec();
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    put(arn.as_bytes());
    put(&(context.len() as u64).to_be_bytes());
    for (name, value) in context {
        put(name.as_bytes());
        put(value.as_bytes());
    }
    out
}

/// (region, account, key id) of `arn:aws:kms:REGION:ACCOUNT:key/ID`.
pub fn parse_key_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let (_partition, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("kms:")?;
    let (region, rest) = rest.split_once(':')?;
    let (account, resource) = rest.split_once(':')?;
    let id = resource.strip_prefix("key/")?;
    (!region.is_empty() && !account.is_empty() && is_key_id(id)).then_some((region, account, id))
}

/// Whether `id` can be a key id: 1-128 letters, digits and `-`.
pub fn is_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_KMS_KEY_ARN, KmsKeyConfig};

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kms() -> Kms {
        let mut config = Config::default();
        config.kms.keys.push(KmsKeyConfig {
            arn: "arn:aws:kms:us-east-1:123456789012:key/disabled-1".into(),
            enabled: false,
            alias: None,
        });
        config.kms.keys.push(KmsKeyConfig {
            arn: "arn:aws:kms:us-east-1:123456789012:key/other-1".into(),
            enabled: true,
            alias: Some("alias/other".into()),
        });
        config.kms.keys.push(KmsKeyConfig {
            arn: "arn:aws:kms:us-east-1:123456789012:key/other-2".into(),
            enabled: true,
            alias: None,
        });
        Kms::from_config(&config)
    }

    #[test]
    fn a_data_key_opens_only_with_its_exact_context() {
        let kms = kms();
        let ctx = context(&[
            ("aws:ssm:SessionId", "s"),
            ("aws:ssm:TargetId", "ecs:c_t_r"),
        ]);
        let key = kms
            .generate_data_key(DEFAULT_KMS_KEY_ARN, 64, &ctx)
            .unwrap();
        assert_eq!(key.plaintext.len(), 64);
        assert_eq!(key.key_arn, DEFAULT_KMS_KEY_ARN);
        let (arn, plain) = kms.decrypt(&key.ciphertext_blob, &ctx, None).unwrap();
        assert_eq!(
            (arn.as_str(), &plain),
            (DEFAULT_KMS_KEY_ARN, &key.plaintext)
        );
        let mut changed = ctx.clone();
        changed.insert("aws:ssm:TargetId".into(), "ecs:c_t_x".into());
        let mut extra = ctx.clone();
        extra.insert("aws:ssm:RandomChallenge".into(), "x".into());
        let mut missing = ctx.clone();
        missing.remove("aws:ssm:SessionId");
        for wrong in [changed, extra, missing, EncryptionContext::new()] {
            assert_eq!(
                kms.decrypt(&key.ciphertext_blob, &wrong, None).unwrap_err(),
                KmsError::InvalidCiphertext
            );
        }
        assert_eq!(kms.issued_data_keys(), vec![key.plaintext.clone()]);
    }

    #[test]
    fn a_context_cannot_be_shifted_between_names_and_values() {
        let kms = kms();
        let ctx = context(&[("ab", "c")]);
        let key = kms
            .generate_data_key(DEFAULT_KMS_KEY_ARN, 32, &ctx)
            .unwrap();
        assert!(
            kms.decrypt(&key.ciphertext_blob, &context(&[("a", "bc")]), None)
                .is_err()
        );
    }

    #[test]
    fn blobs_are_bound_to_their_key_and_to_this_emulator() {
        let kms = kms();
        let ctx = EncryptionContext::new();
        let key = kms.generate_data_key("alias/other", 16, &ctx).unwrap();
        assert!(key.key_arn.ends_with("key/other-1"));
        assert_eq!(
            kms.decrypt(&key.ciphertext_blob, &ctx, Some(DEFAULT_KMS_KEY_ARN)),
            Err(KmsError::IncorrectKey)
        );
        assert!(
            kms.decrypt(&key.ciphertext_blob, &ctx, Some("other-1"))
                .is_ok()
        );
        // Another emulator has another master key.
        let other = Kms::from_config(&Config::default());
        assert_eq!(
            other.decrypt(&key.ciphertext_blob, &ctx, None),
            Err(KmsError::InvalidCiphertext)
        );
        // A blob whose key ARN was swapped for another does not open either.
        let mut swapped = key.ciphertext_blob.clone();
        let at = BLOB_MAGIC.len() + 2;
        let replacement = b"arn:aws:kms:us-east-1:123456789012:key/other-2";
        assert_eq!(replacement.len(), key.key_arn.len());
        swapped[at..at + replacement.len()].copy_from_slice(replacement);
        assert_eq!(
            kms.decrypt(&swapped, &ctx, None),
            Err(KmsError::InvalidCiphertext)
        );
    }

    #[test]
    fn malformed_blobs_are_invalid_ciphertext() {
        let kms = kms();
        let ctx = EncryptionContext::new();
        let good = kms
            .generate_data_key(DEFAULT_KMS_KEY_ARN, 64, &ctx)
            .unwrap()
            .ciphertext_blob;
        for cut in 0..good.len() {
            assert_eq!(
                kms.decrypt(&good[..cut], &ctx, None),
                Err(KmsError::InvalidCiphertext),
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            kms.decrypt(&flipped, &ctx, None),
            Err(KmsError::InvalidCiphertext)
        );
        assert_eq!(
            kms.decrypt(b"\xff\xff", &ctx, None),
            Err(KmsError::InvalidCiphertext)
        );
    }

    #[test]
    fn keys_resolve_by_arn_id_and_alias_and_may_be_disabled_or_missing() {
        let kms = kms();
        let id = parse_key_arn(DEFAULT_KMS_KEY_ARN).unwrap().2;
        assert_eq!(kms.resolve(id).unwrap().arn, DEFAULT_KMS_KEY_ARN);
        assert!(
            kms.resolve("arn:aws:kms:us-east-1:123456789012:alias/other")
                .is_ok()
        );
        let ctx = EncryptionContext::new();
        assert!(matches!(
            kms.generate_data_key("disabled-1", 64, &ctx),
            Err(KmsError::Disabled(arn)) if arn.ends_with("key/disabled-1")
        ));
        let missing = kms.generate_data_key("nope", 64, &ctx).unwrap_err();
        assert_eq!(missing.aws_code(), "NotFoundException");
        assert!(
            missing
                .to_string()
                .contains("arn:aws:kms:us-east-1:123456789012:key/nope")
        );
        assert_eq!(
            kms.generate_data_key(id, 0, &ctx).unwrap_err().aws_code(),
            "ValidationException"
        );
    }

    #[test]
    fn key_arns_parse() {
        assert_eq!(
            parse_key_arn(DEFAULT_KMS_KEY_ARN),
            Some((
                "us-east-1",
                "123456789012",
                "1f2e3d4c-5b6a-4789-9abc-def012345678"
            ))
        );
        assert!(parse_key_arn("arn:aws:kms:us-east-1:1:alias/x").is_none());
        assert!(parse_key_arn("arn:aws:ecs:us-east-1:1:key/x").is_none());
        assert!(parse_key_arn("1f2e3d4c").is_none());
        assert!(is_key_id("1f2e3d4c") && !is_key_id("a b") && !is_key_id(""));
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let kms = kms();
        let key = kms
            .generate_data_key(DEFAULT_KMS_KEY_ARN, 64, &EncryptionContext::new())
            .unwrap();
        let text = format!("{key:?} {kms:?}");
        assert!(text.contains("<redacted>"));
        assert!(!text.contains(&format!("{:?}", key.plaintext)));
    }
}
