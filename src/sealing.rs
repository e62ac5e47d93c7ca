//! Secrets at rest: AES-256-GCM under the data-encryption key
//! (`DATA_ENCRYPTION_KEY`), with the key before a rotation
//! (`DATA_ENCRYPTION_KEY_PREVIOUS`) still able to open what it sealed.
//!
//! A sealed value reads `v1.KID.BASE64(nonce || ciphertext || tag)`: `KID`
//! names the key without revealing it, so a value sealed under another key
//! is told apart from a damaged one, and `stockroom reseal` can find what
//! is not yet under the current key. Each value is bound to what it belongs
//! to (its associated data: a user's id, the settings row's column), so a
//! sealed value copied to another row does not open.
//!
//! Two-factor secrets and the Telegram bot token are sealed.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::config::Config;

const FORMAT: &str = "v1";
/// How every sealed value begins.
const SEALED_PREFIX: &str = "v1.";

/// Why a value could not be opened. The value itself is never part of it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed under another key (kid {0}); set DATA_ENCRYPTION_KEY_PREVIOUS to that key")]
    OtherKey(String),
    #[error("not a sealed value")]
    Malformed,
    #[error("does not decrypt (damaged, or sealed for another record)")]
    Damaged,
}

struct Key {
    key: RandomizedNonceKey,
    kid: String,
}

impl Key {
    /// The derivation the two-factor secrets were first sealed with, kept so
    /// that they open under the same key material whatever its setting's name.
    fn derive(material: &str) -> Self {
        let key = Sha256::digest(format!("stockroom-totp-key-v1:{material}").as_bytes());
        let mut kid = crate::digest::sha256_hex(format!("stockroom-totp-kid:{material}"));
        kid.truncate(8);
        Self {
            // AES-256-GCM refuses only a key that is not 32 bytes long.
            key: RandomizedNonceKey::new(&AES_256_GCM, &key)
                .expect("a SHA-256 digest is a 256-bit key"),
            kid,
        }
    }
}

/// The current key, and the previous one for opening only.
pub struct Sealer {
    current: Key,
    previous: Option<Key>,
    /// False when the key is derived from JWT_SECRET (development only).
    configured: bool,
    production: bool,
}

impl Sealer {
    pub fn new(config: &Config) -> Self {
        let (material, configured) = match config.data_key() {
            Some(key) => (key.expose(), true),
            None => (config.jwt_secret.expose(), false),
        };
        Self {
            current: Key::derive(material),
            previous: config
                .data_encryption_key_previous
                .as_ref()
                .map(|key| Key::derive(key.expose())),
            configured,
            production: config.is_production(),
        }
    }

    /// False in production without a data-encryption key: nothing is
    /// sealed then (a key derived from JWT_SECRET is for development).
    pub fn may_seal(&self) -> bool {
        self.configured || !self.production
    }

    /// The current key's id.
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// True when a data-encryption key is configured (not derived from
    /// JWT_SECRET).
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Seals `plain` for the record `bound_to` under the current key.
    pub fn seal(&self, bound_to: &[u8], plain: &[u8]) -> anyhow::Result<String> {
        let mut buf = plain.to_vec();
        let nonce = self
            .current
            .key
            .seal_in_place_append_tag(Aad::from(bound_to), &mut buf)
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{FORMAT}.{}.{}", self.current.kid, B64.encode(out)))
    }

    /// Opens a value sealed for `bound_to` under the current or the previous
    /// key.
    pub fn open(&self, bound_to: &[u8], stored: &str) -> Result<Vec<u8>, OpenError> {
        let mut parts = stored.splitn(3, '.');
        let (Some(FORMAT), Some(kid), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed);
        };
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.kid == kid)
            .ok_or_else(|| OpenError::OtherKey(kid.to_string()))?;
        let raw = B64.decode(data).map_err(|_| OpenError::Malformed)?;
        if raw.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(bound_to), &mut sealed)
            .map_err(|_| OpenError::Damaged)?;
        Ok(plain.to_vec())
    }

    /// True when `stored` is sealed (it may not open).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// True when `stored` is sealed under the current key.
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(kid, _)| kid == self.current.kid)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("kid", &self.current.kid)
            .field("previous", &self.previous.as_ref().map(|k| &k.kid))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sealer(pairs: &[(&str, String)]) -> Sealer {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Sealer::new(&Config::from_vars(vars).expect("valid"))
    }

    #[test]
    fn values_open_for_their_record_under_the_current_or_previous_key() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let old = sealer(&[("DATA_ENCRYPTION_KEY", a.clone())]);
        let sealed = old.seal(b"user-1", b"twenty-byte-secret!!").unwrap();
        assert!(!sealed.contains(&B64.encode(b"twenty-byte-secret!!")));
        assert_eq!(
            old.open(b"user-1", &sealed).unwrap(),
            b"twenty-byte-secret!!"
        );
        assert_eq!(old.open(b"user-2", &sealed), Err(OpenError::Damaged));
        // Rotated: the new key opens the old value through the previous one,
        // and seals under itself.
        let new = sealer(&[
            ("DATA_ENCRYPTION_KEY", b.clone()),
            ("DATA_ENCRYPTION_KEY_PREVIOUS", a.clone()),
        ]);
        assert!(!new.is_current(&sealed));
        assert_eq!(
            new.open(b"user-1", &sealed).unwrap(),
            b"twenty-byte-secret!!"
        );
        let resealed = new.seal(b"user-1", b"twenty-byte-secret!!").unwrap();
        assert!(new.is_current(&resealed));
        // Without the previous key the old value names its key.
        let only_new = sealer(&[("DATA_ENCRYPTION_KEY", b)]);
        assert!(matches!(
            only_new.open(b"user-1", &sealed),
            Err(OpenError::OtherKey(_))
        ));
        assert_eq!(only_new.open(b"user-1", "plain"), Err(OpenError::Malformed));
        // The deprecated name is the same key.
        let legacy = sealer(&[("TOTP_ENCRYPTION_KEY", a)]);
        assert!(legacy.is_current(&sealed));
    }
}
