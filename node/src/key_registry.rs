//! The key registry's choices, decided from the replicated state alone (pure): which registered
//! keys sign for a tenant and plan, and what a registry `source` string names. Split out of
//! `keys` so that the threshold gate and key policy can read the registry without depending on
//! the keyring (which holds the threshold backend).

use stella_state::State;
use stella_state::command::{KeyEntry, KeyState, ThresholdGroup};

/// The registry source of threshold keys (their shares are on the holders, not in a store).
pub const THRESHOLD_SOURCE: &str = "threshold";

/// Which keys sign for a tenant and plan, decided from the registry alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Nothing registered for this tenant and plan: the node's default key.
    Default,
    /// Every active registered key, oldest first: a tenant policy of several keys (say a file
    /// key and an HSM key) gets one signature from each, in this order, in one envelope. A
    /// threshold key comes with its group (share holders).
    Registered(Vec<(KeyEntry, Option<ThresholdGroup>)>),
    /// Keys were registered, none is active (all retired or revoked): refuse, never fall back.
    NoActiveKey,
}

/// The registry's choice for `tenant` on `plan`. A tenant's keys are never used for another.
pub fn select(state: &State, tenant: &str, plan: &str) -> Selection {
    let mut mine: Vec<&KeyEntry> = state
        .keys
        .values()
        .filter(|k| k.owner_tenant == tenant && k.plan == plan)
        .collect();
    if mine.is_empty() {
        return Selection::Default;
    }
    mine.retain(|k| k.state == KeyState::Active);
    if mine.is_empty() {
        return Selection::NoActiveKey;
    }
    mine.sort_by_key(|k| (k.created_ms, k.key_id.clone()));
    Selection::Registered(
        mine.into_iter()
            .map(|k| (k.clone(), state.threshold_groups.get(&k.key_id).cloned()))
            .collect(),
    )
}

/// The key source recorded in audit records: `file`, `pkcs11`, … (without a locator).
pub fn source_kind(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}

/// The registry `source` of a key of back-end `kind` found by `locator`: `file`,
/// `pkcs11:<label>` or `kms:<key ARN, key id or alias>`; `None` for anything else.
pub fn registry_source(kind: &str, locator: Option<&str>) -> Option<String> {
    match (kind, locator) {
        ("file", None) => Some("file".to_owned()),
        ("pkcs11", Some(label)) if !label.is_empty() => Some(format!("pkcs11:{label}")),
        ("kms", Some(key)) if crate::kms::request::valid_key_ref(key) => Some(format!("kms:{key}")),
        _ => None,
    }
}

/// Whether a registry `source` names a key back-end and locator this node knows (pure: the
/// leader's plan of a registration checks it).
pub fn valid_source(source: &str) -> bool {
    match source.split_once(':') {
        None => source == "file",
        Some((kind, locator)) => kind != "file" && registry_source(kind, Some(locator)).is_some(),
    }
}
