//! Accounts' secrets: usernames, argon2id password hashes, and device tokens stored only as hashes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use natter_proto::ErrorCode;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

pub const USERNAME_CHARS_MAX: usize = 32;
pub const PASSWORD_BYTES_MIN: usize = 8;
pub const PASSWORD_BYTES_MAX: usize = 256;
pub const DISPLAY_NAME_CHARS_MAX: usize = 64;
pub const DEVICE_NAME_CHARS_MAX: usize = 64;

/// Usernames are 3–32 of `a-z 0-9 _ . -`, starting with a letter or digit; compared lower-cased.
pub fn normalize_username(raw: &str) -> Result<String> {
    let name = raw.trim().to_ascii_lowercase();
    let valid_len = (3..=USERNAME_CHARS_MAX).contains(&name.len());
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    let valid_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if valid_len && valid_chars && valid_start {
        Ok(name)
    } else {
        Err(Error::new(
            ErrorCode::InvalidUsername,
            "a username is 3 to 32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
        ))
    }
}

pub fn validate_password(password: &str) -> Result<()> {
    if (PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidPassword,
            format!("a password is {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes long"),
        ))
    }
}

/// Trims a display name or device name and checks its length; empty means "use the default".
pub fn clean_name(raw: Option<&str>, max_chars: usize, what: &str) -> Result<Option<String>> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > max_chars || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} must be at most {max_chars} printable characters"
        )));
    }
    Ok(Some(name.to_string()))
}

/// An argon2id hash in PHC string form. Deliberately slow: call it off the async threads.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| Error::internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("hashing password: {e}")))
}

/// Whether `password` matches a hash made by [`hash_password`]. Deliberately slow.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new device token: 256 random bits, shown to the client once and stored only as a hash.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "nt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token. A fast hash suffices: tokens are random, not guessable passwords.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username(" Alice ").unwrap(), "alice");
        assert!(normalize_username("al").is_err());
        assert!(normalize_username("_alice").is_err());
        assert!(normalize_username("a b c").is_err());
        assert!(normalize_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn password_hash_verifies_only_the_same_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn short_or_long_passwords_are_refused() {
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"x".repeat(300)).is_err());
        assert!(validate_password("long enough").is_ok());
    }
}
