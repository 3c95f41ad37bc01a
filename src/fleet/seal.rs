//! Sealing secrets for Redis: AES-256-GCM (the `aes-gcm` crate), so read access to Redis does
//! not hand out Zoho access.
//!
//! - **Key**: SHA-256 of a domain label and `redis.token_encryption_key` (at least 32 bytes of
//!   operator-supplied material; every replica needs the same value).
//! - **Sealed form**: `version (1) ‖ nonce (12, random per message) ‖ ciphertext ‖ tag (16)`.
//! - **Associated data** binds a sealed value to where it belongs (tenant, token id, expiry), so a
//!   sealed token cannot be replayed under another tenant or with another expiry.
//! - Opening fails (returns `None`) on any tampering, a wrong key or another version.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use crate::config::Secret;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Seals and opens values with the configured key. `Debug` shows nothing of the key.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// Derives the AES-256 key from `material`.
    pub fn new(material: &Secret) -> Self {
        let mut h = Sha256::new();
        h.update(b"zoho-gateway redis token seal v1\0");
        h.update(material.expose().as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals `plain` bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for inputs under 64 GiB.
        let ct = self
            .cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a value sealed with the same key and `aad`; `None` if anything differs.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Secret> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .ok()?;
        String::from_utf8(plain).ok().map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_mismatch_fails() {
        let s = Sealer::new(&Secret::new("k".repeat(32)));
        let token = "1000.abcdef0123456789.fedcba9876543210";
        let sealed = s.seal(token.as_bytes(), b"tenant-a");
        assert!(!sealed.windows(token.len()).any(|w| w == token.as_bytes()));
        assert_eq!(s.open(&sealed, b"tenant-a").unwrap().expose(), token);
        // Another tenant's associated data, another key, a flipped bit, a truncation.
        assert!(s.open(&sealed, b"tenant-b").is_none());
        assert!(
            Sealer::new(&Secret::new("j".repeat(32)))
                .open(&sealed, b"tenant-a")
                .is_none()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(s.open(&tampered, b"tenant-a").is_none());
        assert!(s.open(&sealed[..10], b"tenant-a").is_none());
        // Nonces differ per message.
        assert_ne!(s.seal(b"x", b""), s.seal(b"x", b""));
        assert_eq!(format!("{s:?}"), "Sealer([redacted])");
    }
}
