//! The KMS back-end's decisions, free of I/O: what one `Sign` request carries for a PAE, which
//! keys are acceptable, how long a call may take, and which failures are KMS being unavailable
//! rather than refusing. The SDK calls in `mod.rs` only carry these out.

use std::time::Duration;

use sha2::Digest;

/// KMS signs a `RAW` message of at most this many bytes; a longer one must be sent as its
/// digest (`MessageType: DIGEST`).
pub const RAW_MESSAGE_LIMIT: usize = 4096;
/// The only key spec, usage and signing algorithm this back-end signs with: ECDSA P-256 over
/// SHA-256, DER signatures — the byte contract of every keyful signature here.
pub const KEY_SPEC: &str = "ECC_NIST_P256";
pub const KEY_USAGE: &str = "SIGN_VERIFY";
pub const SIGNING_ALGORITHM: &str = "ECDSA_SHA_256";
/// Below this much time left, no call is started (it could not finish).
pub const MIN_CALL_BUDGET: Duration = Duration::from_millis(50);
/// The longest key reference (`kms:<this>` in the registry) accepted: a key ARN is ~75 bytes,
/// an alias ARN at most ~330.
pub const MAX_KEY_REF: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The PAE itself; KMS hashes it with SHA-256.
    Raw,
    /// SHA-256 of the PAE; KMS signs it as a digest.
    Digest,
}

/// What one `Sign` request sends for the PAE bytes `pae`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub bytes: Vec<u8>,
}

/// `RAW` with the PAE up to [`RAW_MESSAGE_LIMIT`] bytes, `DIGEST` with SHA-256(PAE) above it —
/// and for an empty message, which KMS does not take as `RAW` (a `Message` has 1 to 4,096
/// bytes; a PAE is never empty, but the byte contract allows it). Both give an ECDSA signature
/// over SHA-256(PAE): the same bytes verify either way.
pub fn message_for(pae: &[u8]) -> Message {
    if (1..=RAW_MESSAGE_LIMIT).contains(&pae.len()) {
        return Message {
            kind: MessageKind::Raw,
            bytes: pae.to_vec(),
        };
    }
    Message {
        kind: MessageKind::Digest,
        bytes: sha2::Sha256::digest(pae).to_vec(),
    }
}

/// What `GetPublicKey` said about a key (the SDK's enums as their wire strings).
#[derive(Debug, Clone, Default)]
pub struct KeyFacts<'a> {
    pub key_spec: Option<&'a str>,
    pub key_usage: Option<&'a str>,
    pub signing_algorithms: Vec<&'a str>,
}

/// Refuses every key but an `ECC_NIST_P256` `SIGN_VERIFY` key that signs `ECDSA_SHA_256`.
pub fn check_key(facts: &KeyFacts<'_>) -> Result<(), String> {
    if facts.key_spec != Some(KEY_SPEC) {
        return Err(format!(
            "key spec {}: only {KEY_SPEC} keys sign here",
            facts.key_spec.unwrap_or("(none given)")
        ));
    }
    if facts.key_usage != Some(KEY_USAGE) {
        return Err(format!(
            "key usage {}: the key must be a {KEY_USAGE} key",
            facts.key_usage.unwrap_or("(none given)")
        ));
    }
    if !facts.signing_algorithms.contains(&SIGNING_ALGORITHM) {
        return Err(format!("the key does not offer {SIGNING_ALGORITHM}"));
    }
    Ok(())
}

/// A key reference as the registry stores it after `kms:` — a key id, key ARN, alias name or
/// alias ARN: printable ASCII without spaces, at most [`MAX_KEY_REF`] bytes.
pub fn valid_key_ref(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_REF && key.bytes().all(|b| b.is_ascii_graphic())
}

/// How long one KMS operation (all its attempts) may take: the configured bound, cut to what
/// the request's deadline leaves (`left`, when the call runs within one); `None` when that is
/// too little to start a call.
pub fn budget(configured: Duration, left: Option<Duration>) -> Option<Duration> {
    let budget = match left {
        Some(left) => configured.min(left.saturating_sub(MIN_CALL_BUDGET)),
        None => configured,
    };
    (budget >= MIN_CALL_BUDGET).then_some(budget)
}

/// Whether a KMS service error means "try later" (503 `signing_unavailable`, also at
/// registration) rather than "this will not work" (a refusal: missing, disabled or foreign key,
/// no permission): HTTP 5xx, throttling, and the exceptions KMS documents as transient.
pub fn transient(status: u16, code: Option<&str>) -> bool {
    const TRANSIENT: [&str; 5] = [
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ThrottlingException",
        "LimitExceededException",
    ];
    status >= 500 || status == 429 || code.is_some_and(|c| TRANSIENT.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_4096_bytes_go_raw_others_as_their_sha256() {
        for len in [1, 4095, 4096] {
            let pae = vec![b'p'; len];
            assert_eq!(
                message_for(&pae),
                Message {
                    kind: MessageKind::Raw,
                    bytes: pae.clone()
                },
                "{len}"
            );
        }
        for len in [0, 4097, 1 << 20] {
            let pae = vec![b'p'; len];
            let m = message_for(&pae);
            assert_eq!(m.kind, MessageKind::Digest, "{len}");
            assert_eq!(m.bytes, sha2::Sha256::digest(&pae).to_vec());
        }
    }

    #[test]
    fn only_p256_sign_verify_keys_with_ecdsa_sha256_are_accepted() {
        let good = KeyFacts {
            key_spec: Some("ECC_NIST_P256"),
            key_usage: Some("SIGN_VERIFY"),
            signing_algorithms: vec!["ECDSA_SHA_256"],
        };
        assert!(check_key(&good).is_ok());
        for bad in [
            KeyFacts {
                key_spec: Some("RSA_2048"),
                ..good.clone()
            },
            KeyFacts {
                key_spec: Some("ECC_SECG_P256K1"),
                ..good.clone()
            },
            KeyFacts {
                key_spec: None,
                ..good.clone()
            },
            KeyFacts {
                key_usage: Some("ENCRYPT_DECRYPT"),
                ..good.clone()
            },
            KeyFacts {
                key_usage: None,
                ..good.clone()
            },
            KeyFacts {
                signing_algorithms: vec!["ECDSA_SHA_384"],
                ..good.clone()
            },
        ] {
            assert!(check_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_references_are_printable_and_bounded() {
        for ok in [
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/stella-signing",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
        ] {
            assert!(valid_key_ref(ok), "{ok}");
        }
        for bad in ["", "a b", "key\n", "ключ", &"k".repeat(MAX_KEY_REF + 1)] {
            assert!(!valid_key_ref(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_call_gets_at_most_the_configured_time_and_never_outlives_the_deadline() {
        let five = Duration::from_secs(5);
        assert_eq!(budget(five, None), Some(five));
        assert_eq!(budget(five, Some(Duration::from_secs(9))), Some(five));
        assert_eq!(
            budget(five, Some(Duration::from_secs(2))),
            Some(Duration::from_millis(1950))
        );
        assert_eq!(budget(five, Some(Duration::from_millis(80))), None);
        assert_eq!(budget(five, Some(Duration::ZERO)), None);
    }

    #[test]
    fn outages_and_throttling_are_transient_refusals_are_not() {
        assert!(transient(500, None));
        assert!(transient(503, Some("ServiceUnavailable")));
        assert!(transient(400, Some("ThrottlingException")));
        assert!(
            !transient(400, Some("KMSInvalidStateException")),
            "pending deletion"
        );
        assert!(!transient(400, Some("NotFoundException")));
        assert!(!transient(400, Some("DisabledException")));
        assert!(!transient(400, Some("AccessDeniedException")));
        assert!(!transient(400, None));
    }
}
