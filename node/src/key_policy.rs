//! Key policy per plan (ADR 0022), as decisions without I/O:
//! - `require_hardware_backed`: only keys whose private half never sits in a file on a node
//!   (PKCS#11, cloud KMS, threshold shares) may sign for the plan;
//! - `max_key_age_seconds` + `key_age_grace_seconds`: a key older than its plan allows is due
//!   for rotation (metric and alert); past the grace it stops signing until rotated;
//! - standby keys: a registered `standby` key signs in place of an active key only while that
//!   key's back-end is unavailable.

use stella_state::command::{KeyEntry, KeyState};

use crate::Error;
use crate::config::PlanConfig;

/// Key sources whose private key is not a file on the node.
pub fn hardware_backed(source: &str) -> bool {
    matches!(
        crate::key_registry::source_kind(source),
        "pkcs11" | "kms" | crate::key_registry::THRESHOLD_SOURCE
    )
}

/// May a key of `source` be registered (as active or standby) for `plan`?
pub fn check_registration(plan: &PlanConfig, source: &str) -> Result<(), Error> {
    if plan.require_hardware_backed && !hardware_backed(source) {
        return Err(Error::InvalidRequest(format!(
            "plan `{}` requires hardware-backed keys (PKCS#11, KMS or threshold); a {} key cannot be registered for it",
            crate::error::clip(&plan.name),
            crate::key_registry::source_kind(source)
        )));
    }
    Ok(())
}

/// How old a key is against its plan's rotation cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAge {
    /// No cadence, or younger than `max_key_age_seconds`.
    Fresh,
    /// Past its age, within the grace: still signs, the alert is firing.
    RotationDue { signing_ends_ms: u64 },
    /// Past age and grace: refused until rotated.
    Expired { since_ms: u64 },
}

/// When a key made at `created_ms` is due for rotation on `plan`, if the plan has a cadence.
pub fn rotation_due_ms(plan: &PlanConfig, created_ms: u64) -> Option<u64> {
    plan.max_key_age_seconds
        .map(|age| created_ms.saturating_add(age.saturating_mul(1000)))
}

pub fn key_age(plan: &PlanConfig, created_ms: u64, now_ms: u64) -> KeyAge {
    let Some(due) = rotation_due_ms(plan, created_ms) else {
        return KeyAge::Fresh;
    };
    let ends = due.saturating_add(plan.key_age_grace_seconds.saturating_mul(1000));
    if now_ms < due {
        KeyAge::Fresh
    } else if now_ms < ends {
        KeyAge::RotationDue {
            signing_ends_ms: ends,
        }
    } else {
        KeyAge::Expired { since_ms: ends }
    }
}

/// May these registered keys sign for `plan` at `now_ms`? Refuses (naming the key) a key the
/// plan's hardware rule excludes (registered before the rule) or one past age and grace.
pub fn check_signing(plan: &PlanConfig, keys: &[&KeyEntry], now_ms: u64) -> Result<(), Error> {
    for key in keys {
        if plan.require_hardware_backed && !hardware_backed(&key.source) {
            return Err(Error::KeyPolicy(format!(
                "key {} is a {} key and plan `{}` requires hardware-backed keys; an operator must rotate it",
                key.key_id,
                crate::key_registry::source_kind(&key.source),
                crate::error::clip(&plan.name)
            )));
        }
        if let KeyAge::Expired { .. } = key_age(plan, key.created_ms, now_ms) {
            return Err(Error::KeyPolicy(format!(
                "key {} is older than plan `{}` allows ({} s, {} s grace); an operator must rotate it",
                key.key_id,
                crate::error::clip(&plan.name),
                plan.max_key_age_seconds.unwrap_or_default(),
                plan.key_age_grace_seconds
            )));
        }
    }
    Ok(())
}

/// Signing modes that do not use a registered or default key on the node: keyless signs with
/// an ephemeral in-memory key, which a hardware-only plan does not allow.
pub fn check_keyless(plan: &PlanConfig) -> Result<(), Error> {
    if plan.require_hardware_backed {
        return Err(Error::KeyPolicy(format!(
            "plan `{}` requires hardware-backed keys; keyless signing uses an ephemeral software key",
            crate::error::clip(&plan.name)
        )));
    }
    Ok(())
}

/// The node's own default key may sign for a hardware-only plan only if it is hardware-backed.
pub fn check_default_key(plan: &PlanConfig, default_source: &str) -> Result<(), Error> {
    if plan.require_hardware_backed && !hardware_backed(default_source) {
        return Err(Error::KeyPolicy(format!(
            "plan `{}` requires hardware-backed keys and the node's default key is a {default_source} key",
            crate::error::clip(&plan.name)
        )));
    }
    Ok(())
}

/// Start-up check: a plan that requires hardware-backed keys but signs tenants without a key
/// of their own with the node's default key contradicts itself when that key is a file.
pub fn check_config(plans: &[PlanConfig], default_source: &str) -> Result<(), Error> {
    for plan in plans {
        if plan.require_hardware_backed
            && plan.shared_default_key
            && !hardware_backed(default_source)
        {
            return Err(Error::Config(format!(
                "plan `{}`: require_hardware_backed = true with shared_default_key = true needs a hardware-backed default key ([signing.pkcs11]), not a key file",
                plan.name
            )));
        }
        if plan.max_key_age_seconds == Some(0) {
            return Err(Error::Config(format!(
                "plan `{}`: max_key_age_seconds must be positive",
                plan.name
            )));
        }
    }
    Ok(())
}

/// The tenant/plan's standby key, if one is registered.
pub fn standby<'a>(
    keys: impl IntoIterator<Item = &'a KeyEntry>,
    tenant: &str,
    plan: &str,
) -> Option<&'a KeyEntry> {
    keys.into_iter()
        .find(|k| k.owner_tenant == tenant && k.plan == plan && k.state == KeyState::Standby)
}

/// The earliest rotation due time (ms) among `plan`'s active keys, for the rotation gauge.
pub fn earliest_rotation_due<'a>(
    plan: &PlanConfig,
    keys: impl IntoIterator<Item = &'a KeyEntry>,
) -> Option<u64> {
    keys.into_iter()
        .filter(|k| k.plan == plan.name && k.state == KeyState::Active)
        .filter_map(|k| rotation_due_ms(plan, k.created_ms))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(hardware: bool, age: Option<u64>, grace: u64) -> PlanConfig {
        PlanConfig {
            name: "gold".into(),
            signatures_per_window: 10,
            window_seconds: 60,
            max_concurrent: 1,
            max_artifact_bytes: 1024,
            shared_default_key: false,
            require_hardware_backed: hardware,
            max_key_age_seconds: age,
            key_age_grace_seconds: grace,
        }
    }

    fn key(source: &str, state: KeyState, created_ms: u64) -> KeyEntry {
        KeyEntry {
            key_id: format!("sha256:{source}"),
            owner_tenant: "t".into(),
            plan: "gold".into(),
            source: source.into(),
            algorithm: "ECDSA_P256_SHA256".into(),
            public_key_pem: String::new(),
            state,
            created_ms,
            updated_ms: created_ms,
            reason: "r".into(),
        }
    }

    #[test]
    fn hardware_backed_means_hsm_kms_or_threshold() {
        for source in [
            "pkcs11:label",
            "kms:arn:aws:kms:eu-west-1:1:key/x",
            "threshold",
        ] {
            assert!(hardware_backed(source), "{source}");
        }
        assert!(!hardware_backed("file"));
        assert!(!hardware_backed("keyless"));
        let strict = plan(true, None, 0);
        assert!(check_registration(&strict, "file").is_err());
        assert!(check_registration(&strict, "pkcs11:k").is_ok());
        assert!(check_registration(&plan(false, None, 0), "file").is_ok());
        assert!(check_keyless(&strict).is_err());
        assert!(check_default_key(&strict, "file").is_err());
        assert!(check_default_key(&strict, "pkcs11").is_ok());
    }

    #[test]
    fn a_file_key_registered_before_the_rule_is_refused_naming_it() {
        let strict = plan(true, None, 0);
        let file = key("file", KeyState::Active, 0);
        let err = check_signing(&strict, &[&file], 1).expect_err("refused");
        assert!(err.to_string().contains("sha256:file"), "{err}");
        assert!(matches!(err, Error::KeyPolicy(_)));
        assert!(check_signing(&strict, &[&key("pkcs11:a", KeyState::Active, 0)], 1).is_ok());
    }

    #[test]
    fn key_age_is_fresh_then_due_then_expired_with_no_overflow() {
        let p = plan(false, Some(10), 5);
        assert_eq!(key_age(&p, 1_000, 10_999), KeyAge::Fresh);
        assert_eq!(
            key_age(&p, 1_000, 11_000),
            KeyAge::RotationDue {
                signing_ends_ms: 16_000
            }
        );
        assert_eq!(
            key_age(&p, 1_000, 16_000),
            KeyAge::Expired { since_ms: 16_000 }
        );
        assert_eq!(key_age(&plan(false, None, 0), 0, u64::MAX), KeyAge::Fresh);
        let huge = plan(false, Some(u64::MAX), u64::MAX);
        assert_eq!(key_age(&huge, u64::MAX - 1, u64::MAX - 1), KeyAge::Fresh);
        let old = key("file", KeyState::Active, 1_000);
        assert!(check_signing(&p, &[&old], 15_999).is_ok());
        let err = check_signing(&p, &[&old], 16_000).expect_err("expired");
        assert!(err.to_string().contains("sha256:file"), "{err}");
    }

    #[test]
    fn config_contradictions_are_refused() {
        let mut p = plan(true, None, 0);
        p.shared_default_key = true;
        assert!(check_config(std::slice::from_ref(&p), "file").is_err());
        assert!(check_config(std::slice::from_ref(&p), "pkcs11").is_ok());
        assert!(check_config(&[plan(false, Some(0), 0)], "file").is_err());
    }

    #[test]
    fn the_standby_and_the_earliest_rotation_are_found_per_plan() {
        let p = plan(false, Some(100), 0);
        let keys = [
            key("file", KeyState::Active, 50),
            key("pkcs11:a", KeyState::Active, 20),
            key("pkcs11:b", KeyState::Standby, 0),
            key("pkcs11:c", KeyState::Retired, 0),
        ];
        assert_eq!(
            standby(&keys, "t", "gold").map(|k| k.key_id.as_str()),
            Some("sha256:pkcs11:b")
        );
        assert!(standby(&keys, "other", "gold").is_none());
        assert_eq!(earliest_rotation_due(&p, &keys), Some(100_020));
        assert_eq!(earliest_rotation_due(&plan(false, None, 0), &keys), None);
    }
}
