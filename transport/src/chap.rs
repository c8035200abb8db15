//! CHAP authentication (RFC 7143 section 12.1.3, RFC 1994) with MD5
//! (CHAP_A=5), one-way and mutual.
//!
//! Secrets live in [`Secret`], which never prints its bytes and wipes them
//! on drop, so no log line, error message or `Debug` output can carry one.
//!
//! The random bytes of our challenges come from a [`Random`] the caller
//! passes in (as rustls takes `SecureRandom` from its crypto provider):
//! [`OsRandom`] for real sessions, [`DeterministicRandom`] for tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::sync::atomic::{AtomicU64, Ordering};

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Shortest secret accepted: 12 bytes (96 bits). The seeds refuse shorter
/// ones (events 35/36, status 0xAFFF0048) and RFC 7143 section 12.1.3
/// says the same for secrets used without IPsec.
pub const MIN_SECRET_LEN: usize = 12;

/// Longest CHAP name accepted: the RFC's 223-byte iSCSI name limit, since
/// the name defaults to the initiator name (seed scenario E9).
pub const MAX_NAME_LEN: usize = 223;

/// Longest challenge we accept from a target: RFC 7143 section 12.1.3
/// limits CHAP_C to 1024 bytes (seed event 33).
pub const MAX_CHALLENGE_LEN: usize = 1024;

/// Our challenges are 16 random bytes, the MD5 output size.
const CHALLENGE_LEN: usize = 16;

/// A CHAP secret. Its bytes are never printed and are wiped on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses a secret as an administrator writes it: text, or `0x` followed
    /// by hex digits for a binary secret (as the seeds' tools do). A single
    /// trailing newline (from a file) is dropped.
    pub fn parse(text: &[u8]) -> Result<Secret, ChapError> {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let bytes = if text.starts_with(b"0x") || text.starts_with(b"0X") {
            let hex = std::str::from_utf8(text).map_err(|_| ChapError::BadSecretEncoding)?;
            Zeroizing::new(crate::text::value::decode_binary(hex).map_err(|_| ChapError::BadSecretEncoding)?)
        } else {
            Zeroizing::new(text.to_vec())
        };
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ChapError::SecretTooShort { len: bytes.len() });
        }
        Ok(Secret(bytes))
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.expose().ct_eq(other.expose()).into()
    }
}

/// A CHAP name and its secret.
#[derive(Clone, Debug, PartialEq)]
pub struct ChapCredentials {
    /// CHAP_N.
    pub user: String,
    /// The shared secret.
    pub secret: Secret,
}

impl ChapCredentials {
    /// Checks the name's length and characters.
    pub fn new(user: impl Into<String>, secret: Secret) -> Result<ChapCredentials, ChapError> {
        let user = user.into();
        if user.is_empty() || user.len() > MAX_NAME_LEN {
            return Err(ChapError::BadUserName { len: user.len() });
        }
        if user.bytes().any(|b| b == 0 || b == b'=' || b.is_ascii_control()) {
            return Err(ChapError::BadUserCharacters);
        }
        Ok(ChapCredentials { user, secret })
    }
}

/// CHAP configuration of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct ChapConfig {
    /// What the target checks: our name and secret.
    pub initiator: ChapCredentials,
    /// For mutual CHAP, what we check: the target's name and secret.
    pub target: Option<ChapCredentials>,
}

impl ChapConfig {
    /// One-way or mutual CHAP. Refuses the same secret in both directions:
    /// RFC 7143 section 12.1.3 forbids it, because a target could then
    /// reflect our own challenge back and learn a valid response.
    pub fn new(initiator: ChapCredentials, target: Option<ChapCredentials>) -> Result<ChapConfig, ChapError> {
        if let Some(t) = &target
            && t.secret == initiator.secret
        {
            return Err(ChapError::SameSecretBothWays);
        }
        Ok(ChapConfig { initiator, target })
    }
}

/// Problems with CHAP configuration or with what the target sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChapError {
    /// Seed events 35/36.
    #[error(
        "CHAP secret is {len} bytes; at least {MIN_SECRET_LEN} are required (96 bits): use a longer secret on both sides"
    )]
    SecretTooShort {
        /// Its length.
        len: usize,
    },
    /// A `0x` secret with bad hex digits.
    #[error("CHAP secret starts with 0x but is not valid hex: write it as text, or as 0x followed by hex digits")]
    BadSecretEncoding,
    /// Name empty or too long.
    #[error("CHAP user name is {len} bytes; it must be 1 to {MAX_NAME_LEN} bytes")]
    BadUserName {
        /// Its length.
        len: usize,
    },
    /// Name with `=`, NUL or control characters.
    #[error("CHAP user name contains '=', NUL or a control character")]
    BadUserCharacters,
    /// Mutual CHAP configured with one secret for both directions.
    #[error("mutual CHAP needs different initiator and target secrets (RFC 7143 section 12.1.3)")]
    SameSecretBothWays,
    /// The target asked for a CHAP algorithm other than MD5 (seed event 14).
    #[error("target chose CHAP_A={0}; only 5 (MD5) is supported")]
    UnsupportedAlgorithm(String),
    /// A CHAP key with a malformed value (seed events 15/16).
    #[error("target sent an invalid {key}: {reason}")]
    InvalidKey {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A challenge above 1024 bytes (seed event 33).
    #[error("target's CHAP challenge is {0} bytes, over the {MAX_CHALLENGE_LEN}-byte limit")]
    ChallengeTooLong(usize),
    /// The target sent our own challenge back (reflection attack).
    #[error("target sent back our own CHAP challenge: refusing a reflection attack")]
    ReflectedChallenge,
    /// Mutual CHAP: wrong CHAP_N from the target.
    #[error("target authenticated as '{got}', expected '{expected}': check the target CHAP user")]
    WrongTargetName {
        /// Name received.
        got: String,
        /// Name configured.
        expected: String,
    },
    /// Mutual CHAP: wrong CHAP_R from the target (seed event 17).
    #[error("target failed mutual CHAP authentication (wrong response): check the target CHAP secret")]
    TargetAuthFailed,
    /// The operating system's random source failed (seed event 37).
    #[error("cannot generate a CHAP challenge: the system random source failed")]
    NoRandom,
}

/// The CHAP response: MD5(identifier || secret || challenge) (RFC 1994
/// section 4.1).
pub fn response(id: u8, secret: &Secret, challenge: &[u8]) -> [u8; 16] {
    Md5::new().chain_update([id]).chain_update(secret.expose()).chain_update(challenge).finalize().into()
}

/// Where the random bytes of our CHAP challenges come from.
pub trait Random: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with random bytes, or fails with [`ChapError::NoRandom`].
    fn fill(&self, buf: &mut [u8]) -> Result<(), ChapError>;
}

/// The operating system's random source: what every real session uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), ChapError> {
        getrandom::fill(buf).map_err(|_| ChapError::NoRandom)
    }
}

/// A reproducible sequence drawn from a seed (SplitMix64), for tests:
/// the same seed gives the same challenges, so a test can predict them.
/// Never for a real session: a target that can predict our challenge can
/// obtain the right answer to it in advance and pass mutual CHAP without
/// the secret.
#[derive(Debug)]
pub struct DeterministicRandom {
    state: AtomicU64,
}

impl DeterministicRandom {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> DeterministicRandom {
        DeterministicRandom { state: AtomicU64::new(seed) }
    }
}

impl Random for DeterministicRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), ChapError> {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in buf.chunks_mut(8) {
            let mut z = self.state.fetch_add(GAMMA, Ordering::Relaxed).wrapping_add(GAMMA);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let bytes = z.to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
        Ok(())
    }
}

/// A challenge we send for mutual CHAP, and the check of the answer.
pub struct OurChallenge {
    id: u8,
    challenge: [u8; CHALLENGE_LEN],
}

impl std::fmt::Debug for OurChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OurChallenge")
    }
}

impl OurChallenge {
    /// Draws a fresh identifier and challenge from `random`.
    pub fn generate(random: &dyn Random) -> Result<OurChallenge, ChapError> {
        let mut buf = [0u8; CHALLENGE_LEN + 1];
        random.fill(&mut buf)?;
        let [id, rest @ ..] = buf;
        Ok(OurChallenge { id, challenge: rest })
    }

    /// CHAP_I value.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// CHAP_C value (raw bytes).
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// Checks the target's CHAP_N and CHAP_R against the configured target
    /// credentials, comparing in constant time.
    pub fn verify(&self, expected: &ChapCredentials, name: &str, resp: &[u8]) -> Result<(), ChapError> {
        if name != expected.user {
            return Err(ChapError::WrongTargetName { got: name.to_string(), expected: expected.user.clone() });
        }
        let want = response(self.id, &expected.secret, &self.challenge);
        if bool::from(want.ct_eq(resp)) { Ok(()) } else { Err(ChapError::TargetAuthFailed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::parse(s.as_bytes()).unwrap()
    }

    /// A response computed independently (Python: hashlib.md5(bytes([7]) +
    /// b"initsecret12" + bytes(range(16))).hexdigest()).
    #[test]
    fn md5_response_known_answer() {
        let challenge: Vec<u8> = (0..16).collect();
        let r = response(7, &secret("initsecret12"), &challenge);
        assert_eq!(crate::text::value::encode_hex(&r), "0xd1a3306f18652c9f89073cfba6ed6103");
    }

    #[test]
    fn secrets_shorter_than_12_bytes_are_refused() {
        assert_eq!(Secret::parse(b"elevenbytes").unwrap_err(), ChapError::SecretTooShort { len: 11 });
        assert!(Secret::parse(b"twelve bytes").is_ok());
        assert!(Secret::parse(b"twelve bytes\n").is_ok());
        assert_eq!(Secret::parse(b"0x0102").unwrap_err(), ChapError::SecretTooShort { len: 2 });
        assert!(Secret::parse(b"0x0102030405060708090a0b0c").is_ok());
        assert_eq!(Secret::parse(b"0xzz0102030405060708090a0b0c").unwrap_err(), ChapError::BadSecretEncoding);
    }

    #[test]
    fn secrets_never_print() {
        let s = secret("topsecretvalue");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let c = ChapCredentials::new("user", s).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn same_secret_both_ways_is_refused() {
        let i = ChapCredentials::new("i", secret("samesecret1234")).unwrap();
        let t = ChapCredentials::new("t", secret("samesecret1234")).unwrap();
        assert_eq!(ChapConfig::new(i, Some(t)).unwrap_err(), ChapError::SameSecretBothWays);
    }

    #[test]
    fn user_name_limits() {
        let n223 = "a".repeat(223);
        assert!(ChapCredentials::new(n223, secret("123456789012")).is_ok());
        let n224 = "a".repeat(224);
        assert_eq!(
            ChapCredentials::new(n224, secret("123456789012")).unwrap_err(),
            ChapError::BadUserName { len: 224 }
        );
        assert!(ChapCredentials::new("a=b", secret("123456789012")).is_err());
    }

    #[test]
    fn mutual_verification() {
        let ours = OurChallenge { id: 9, challenge: [3; 16] };
        let target = ChapCredentials::new("tgtuser", secret("tgtsecret123")).unwrap();
        let good = response(9, &target.secret, &[3; 16]);
        assert_eq!(ours.verify(&target, "tgtuser", &good), Ok(()));
        assert_eq!(ours.verify(&target, "tgtuser", &[0; 16]), Err(ChapError::TargetAuthFailed));
        assert!(matches!(ours.verify(&target, "other", &good), Err(ChapError::WrongTargetName { .. })));
    }

    #[test]
    fn generated_challenges_differ() {
        let a = OurChallenge::generate(&OsRandom).unwrap();
        let b = OurChallenge::generate(&OsRandom).unwrap();
        assert_ne!(a.challenge(), b.challenge());
    }

    #[test]
    fn deterministic_random_repeats_per_seed_and_moves_on() {
        let draw = |r: &DeterministicRandom| {
            let c = OurChallenge::generate(r).unwrap();
            (c.id(), c.challenge().to_vec())
        };
        let (a, b) = (DeterministicRandom::new(7), DeterministicRandom::new(7));
        let first = draw(&a);
        assert_eq!(first, draw(&b), "same seed, same challenge");
        assert_ne!(first, draw(&a), "the next challenge differs");
        assert_ne!(first, draw(&DeterministicRandom::new(8)), "another seed, another challenge");
    }
}
