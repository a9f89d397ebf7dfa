//! AES-256-GCM for KMS-encrypted sessions (README "KMS encryption"), from aws-lc-rs.
//!
//! The 64-byte KMS data key splits in two: bytes 0-31 encrypt what the agent sends (we only
//! open with them), bytes 32-63 encrypt what we send. A sealed payload is the 12-byte nonce,
//! then the ciphertext, then the 16-byte tag; there is no additional authenticated data.
//!
//! Our nonces are a random 32-bit prefix followed by a 64-bit counter that only goes up, so
//! within one [`SessionCipher`] no nonce repeats, and the prefix keeps two ciphers that were
//! (wrongly) built from the same key apart as well. Key material lives in a [`DataKey`]
//! (zeroised on drop) and in aws-lc's key schedule, whose allocator wipes it when freed; no
//! `Debug` here prints a key. Malformed input is a [`CryptoError`], never a panic.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use bytes::Bytes;
use zeroize::Zeroizing;

/// Length of the KMS data key (GenerateDataKey `NumberOfBytes`).
pub const DATA_KEY_LEN: usize = 64;
/// Length of the nonce in front of every sealed payload.
pub const NONCE_LEN: usize = 12;
/// Length of the GCM tag at the end of every sealed payload.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed payload has on top of its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const HALF: usize = DATA_KEY_LEN / 2;

/// Why a payload could not be sealed or opened, or a key not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the KMS data key has {len} bytes instead of {DATA_KEY_LEN}")]
    DataKeyLength { len: usize },
    #[error(
        "an encrypted payload of {len} bytes is shorter than its nonce and tag \
         ({SEAL_OVERHEAD} bytes)"
    )]
    Truncated { len: usize },
    #[error("an encrypted payload failed authentication (wrong key, or altered on the way)")]
    Forged,
    #[error("the nonce counter of this session is exhausted")]
    NoncesExhausted,
    #[error("the system's random generator failed")]
    Random,
}

/// The plaintext data key from KMS GenerateDataKey. Zeroised on drop; `Debug` redacts it and
/// there is no other way to print it.
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl DataKey {
    /// Copies the key out of `bytes`, which must be exactly 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        if bytes.len() != DATA_KEY_LEN {
            return Err(CryptoError::DataKeyLength { len: bytes.len() });
        }
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// Bytes 0-31: the key the agent encrypts with.
    fn agent_to_client(&self) -> &[u8] {
        &self.0[..HALF]
    }

    /// Bytes 32-63: the key we encrypt with.
    fn client_to_agent(&self) -> &[u8] {
        &self.0[HALF..]
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// The two directions of one encrypted session.
pub struct SessionCipher {
    /// Opens what the agent sends (key bytes 0-31).
    open_key: LessSafeKey,
    /// Seals what we send (key bytes 32-63).
    seal_key: LessSafeKey,
    nonce_prefix: [u8; 4],
    next_counter: u64,
}

impl fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCipher")
            .field("sealed", &self.next_counter)
            .finish_non_exhaustive()
    }
}

impl SessionCipher {
    /// A cipher for `key` whose nonces start with a random prefix.
    pub fn new(key: &DataKey) -> Result<Self, CryptoError> {
        let mut prefix = [0u8; 4];
        aws_lc_rs::rand::fill(&mut prefix).map_err(|_| CryptoError::Random)?;
        Self::with_nonce_prefix(key, prefix)
    }

    /// A cipher whose nonces start with `prefix` (tests pin it to compare bytes).
    pub fn with_nonce_prefix(key: &DataKey, prefix: [u8; 4]) -> Result<Self, CryptoError> {
        Ok(Self {
            open_key: aes_256_gcm(key.agent_to_client())?,
            seal_key: aes_256_gcm(key.client_to_agent())?,
            nonce_prefix: prefix,
            next_counter: 0,
        })
    }

    /// Encrypts `plaintext` for the agent: `nonce || ciphertext || tag`, with a nonce this
    /// cipher has never used.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Bytes, CryptoError> {
        let counter = self.next_counter;
        self.next_counter = counter.checked_add(1).ok_or(CryptoError::NoncesExhausted)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        seal_with_nonce(&self.seal_key, nonce, plaintext)
    }

    /// Decrypts and authenticates a payload the agent sealed.
    pub fn open(&self, sealed: &[u8]) -> Result<Bytes, CryptoError> {
        open_with(&self.open_key, sealed)
    }

    /// How many payloads this cipher has sealed (the next nonce counter).
    pub fn sealed_count(&self) -> u64 {
        self.next_counter
    }
}

fn aes_256_gcm(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::DataKeyLength { len: key.len() * 2 })
}

fn seal_with_nonce(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Bytes, CryptoError> {
    let mut sealed = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed[NONCE_LEN..],
        )
        // Only fails for inputs beyond GCM's 64 GiB limit, far above any frame.
        .map_err(|_| CryptoError::Forged)?;
    sealed.extend_from_slice(tag.as_ref());
    Ok(Bytes::from(sealed))
}

fn open_with(key: &LessSafeKey, sealed: &[u8]) -> Result<Bytes, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated { len: sealed.len() });
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Forged)?;
    let mut buffer = ciphertext.to_vec();
    let plaintext_len = key
        .open_in_place(nonce, Aad::empty(), &mut buffer)
        .map_err(|_| CryptoError::Forged)?
        .len();
    buffer.truncate(plaintext_len);
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn hex(text: &str) -> Vec<u8> {
        hex::decode(text).expect("valid hex")
    }

    /// A data key whose agent half is `agent` and client half is `client`.
    fn key(agent: &[u8], client: &[u8]) -> DataKey {
        DataKey::from_slice(&[agent, client].concat()).expect("64 bytes")
    }

    fn raw(bytes: &[u8]) -> LessSafeKey {
        aes_256_gcm(bytes).expect("32 bytes")
    }

    /// The AES-256 cases of the GCM specification (McGrew and Viega), used by NIST's GCM
    /// validation: test cases 13, 14 and 15 (96-bit IV, no additional data).
    const VECTORS: [(&str, &str, &str, &str, &str); 3] = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
    ];

    #[test]
    fn gcm_known_answers_seal_and_open() {
        for (k, iv, pt, ct, tag) in VECTORS {
            let nonce: [u8; NONCE_LEN] = hex(iv).try_into().expect("12 bytes");
            let expected = [hex(iv), hex(ct), hex(tag)].concat();
            let sealed = seal_with_nonce(&raw(&hex(k)), nonce, &hex(pt)).expect("seal");
            assert_eq!(sealed.as_ref(), expected.as_slice(), "seal of {pt}");
            // Opening goes through the session cipher, with the vector's key as agent half.
            let cipher = SessionCipher::new(&key(&hex(k), &[9; 32])).expect("cipher");
            assert_eq!(cipher.open(&expected).expect("open").as_ref(), hex(pt));
        }
    }

    #[test]
    fn we_open_with_bytes_0_to_31_and_seal_with_bytes_32_to_63() {
        let agent_half = [1u8; 32];
        let client_half = [2u8; 32];
        let mut cipher = SessionCipher::new(&key(&agent_half, &client_half)).expect("cipher");

        let from_agent = seal_with_nonce(&raw(&agent_half), [7; NONCE_LEN], b"out").unwrap();
        assert_eq!(
            cipher.open(&from_agent).expect("agent half").as_ref(),
            b"out"
        );
        let wrong_half = seal_with_nonce(&raw(&client_half), [7; NONCE_LEN], b"out").unwrap();
        assert_eq!(cipher.open(&wrong_half), Err(CryptoError::Forged));

        let to_agent = cipher.seal(b"in").expect("seal");
        assert_eq!(
            open_with(&raw(&client_half), &to_agent).expect("client half"),
            &b"in"[..]
        );
        assert_eq!(
            open_with(&raw(&agent_half), &to_agent),
            Err(CryptoError::Forged)
        );
    }

    #[test]
    fn nonces_never_repeat_and_carry_a_prefix_and_counter() {
        let mut cipher =
            SessionCipher::with_nonce_prefix(&key(&[1; 32], &[2; 32]), [0xAB; 4]).unwrap();
        let mut seen = HashSet::new();
        for counter in 0..10_000u64 {
            let sealed = cipher.seal(b"same plaintext").expect("seal");
            let nonce = &sealed[..NONCE_LEN];
            assert_eq!(&nonce[..4], &[0xAB; 4]);
            assert_eq!(&nonce[4..], counter.to_be_bytes());
            assert!(seen.insert(nonce.to_vec()), "nonce reused at {counter}");
        }
        assert_eq!(cipher.sealed_count(), 10_000);
        cipher.next_counter = u64::MAX;
        assert_eq!(cipher.seal(b"x"), Err(CryptoError::NoncesExhausted));
        assert_eq!(cipher.seal(b"x"), Err(CryptoError::NoncesExhausted));
    }

    #[test]
    fn two_ciphers_from_one_key_use_different_prefixes() {
        let key = key(&[1; 32], &[2; 32]);
        let prefixes: HashSet<[u8; 4]> = (0..16)
            .map(|_| SessionCipher::new(&key).expect("cipher").nonce_prefix)
            .collect();
        assert!(prefixes.len() > 1, "the prefix is random");
    }

    #[test]
    fn malformed_ciphertext_is_an_error_never_a_panic() {
        let agent_half = [3u8; 32];
        let cipher = SessionCipher::new(&key(&agent_half, &[4; 32])).expect("cipher");
        for len in 0..SEAL_OVERHEAD {
            assert_eq!(
                cipher.open(&vec![0u8; len]),
                Err(CryptoError::Truncated { len })
            );
        }
        let sealed = seal_with_nonce(&raw(&agent_half), [5; NONCE_LEN], b"payload").unwrap();
        for index in 0..sealed.len() {
            let mut flipped = sealed.to_vec();
            flipped[index] ^= 0x01;
            assert_eq!(
                cipher.open(&flipped),
                Err(CryptoError::Forged),
                "bit {index}"
            );
        }
        assert_eq!(
            cipher.open(&sealed[..sealed.len() - 1]),
            Err(CryptoError::Forged)
        );
        let empty = seal_with_nonce(&raw(&agent_half), [5; NONCE_LEN], b"").unwrap();
        assert_eq!(cipher.open(&empty).expect("empty plaintext").len(), 0);
        let other = SessionCipher::new(&key(&[6; 32], &[4; 32])).expect("cipher");
        assert_eq!(other.open(&sealed), Err(CryptoError::Forged), "wrong key");
    }

    #[test]
    fn data_keys_of_the_wrong_length_are_refused_and_never_printed() {
        assert_eq!(
            DataKey::from_slice(&[0; 32]).err(),
            Some(CryptoError::DataKeyLength { len: 32 })
        );
        let key = DataKey::from_slice(&[0x5A; 64]).expect("64 bytes");
        let cipher = SessionCipher::new(&key).expect("cipher");
        for text in [format!("{key:?}"), format!("{cipher:?}")] {
            assert!(!text.contains("5A") && !text.contains("90"), "{text}");
        }
    }
}
