//! Planning key-registry changes: a registration (with rotation), a standby's promotion, and
//! their audit records.

use stella_signer::PublicKey;
use stella_state::command::{KeyEntry, KeyState};
use stella_state::{AuditDraft, Command, State};

use super::Planned;

/// A key registration, and with `rotate` the retirement of the tenant/plan's active keys.
pub(super) fn registered(
    state: &State,
    actor: &str,
    entry: KeyEntry,
    register: Command,
    rotate: bool,
    now_ms: u64,
    audit: impl FnOnce(&[String]) -> AuditDraft,
) -> Planned {
    let retired: Vec<String> = if rotate {
        state
            .keys
            .values()
            .filter(|k| {
                k.owner_tenant == entry.owner_tenant
                    && k.plan == entry.plan
                    && k.state == KeyState::Active
            })
            .map(|k| k.key_id.clone())
            .collect()
    } else {
        Vec::new()
    };
    let mut commands = vec![register];
    commands.extend(retired.iter().map(|key_id| Command::SetKeyState {
        key_id: key_id.clone(),
        state: KeyState::Retired,
        reason: format!("rotated to {}: {}", entry.key_id, entry.reason),
        actor: actor.to_owned(),
        now_ms,
    }));
    Planned {
        audit: audit(&retired),
        commands,
        subject: Some(entry.key_id),
        retired,
    }
}

/// The tenant/plan's standby entry whose key is `public_key`, if there is one.
pub(super) fn standby_of<'a>(
    state: &'a State,
    tenant: &str,
    plan: &str,
    public_key: &PublicKey,
) -> Option<&'a KeyEntry> {
    state
        .keys
        .get(&public_key.key_id())
        .filter(|k| k.state == KeyState::Standby && k.owner_tenant == tenant && k.plan == plan)
}

/// A rotation to the tenant/plan's standby key: it becomes active and the active keys retire,
/// in one entry (ADR 0022).
pub(super) fn promotion(
    state: &State,
    actor: &str,
    draft: &impl Fn(Vec<String>, &str, String) -> AuditDraft,
    standby: &KeyEntry,
    reason: &str,
    now_ms: u64,
) -> Planned {
    let promote = Command::SetKeyState {
        key_id: standby.key_id.clone(),
        state: KeyState::Active,
        reason: format!("standby promoted: {reason}"),
        actor: actor.to_owned(),
        now_ms,
    };
    registered(
        state,
        actor,
        standby.clone(),
        promote,
        true,
        now_ms,
        |retired| {
            draft(
                Vec::new(),
                "key_rotated",
                format!(
                    "standby key {} promoted to active for {}/{}, retired {}: {reason}",
                    standby.key_id,
                    standby.owner_tenant,
                    standby.plan,
                    if retired.is_empty() {
                        "none".to_owned()
                    } else {
                        retired.join(", ")
                    }
                ),
            )
        },
    )
}

/// A new standby key; the tenant/plan's previous standby (at most one) retires in the same
/// entry.
pub(super) fn standby_registered(
    state: &State,
    actor: &str,
    draft: &impl Fn(Vec<String>, &str, String) -> AuditDraft,
    entry: KeyEntry,
    now_ms: u64,
) -> Planned {
    let retired: Vec<String> = state
        .keys
        .values()
        .filter(|k| {
            k.owner_tenant == entry.owner_tenant
                && k.plan == entry.plan
                && k.state == KeyState::Standby
        })
        .map(|k| k.key_id.clone())
        .collect();
    let mut commands = vec![Command::RegisterKey(entry.clone())];
    commands.extend(retired.iter().map(|key_id| Command::SetKeyState {
        key_id: key_id.clone(),
        state: KeyState::Retired,
        reason: format!("standby replaced by {}: {}", entry.key_id, entry.reason),
        actor: actor.to_owned(),
        now_ms,
    }));
    let also = if retired.is_empty() {
        String::new()
    } else {
        format!(", retired standby {}", retired.join(", "))
    };
    Planned {
        audit: draft(
            Vec::new(),
            "key_registered",
            format!(
                "key {} standby for {}/{}{also}: {}",
                entry.key_id, entry.owner_tenant, entry.plan, entry.reason
            ),
        ),
        commands,
        subject: Some(entry.key_id),
        retired,
    }
}

pub(super) fn key_audit(
    draft: &impl Fn(Vec<String>, &str, String) -> AuditDraft,
    what: &str,
    tenant: &str,
    plan: &str,
    key_id: &str,
    retired: &[String],
    reason: &str,
) -> AuditDraft {
    let (tag, also) = if retired.is_empty() {
        ("key_registered", String::new())
    } else {
        ("key_rotated", format!(", retired {}", retired.join(", ")))
    };
    draft(
        Vec::new(),
        tag,
        format!("{what} {key_id} active for {tenant}/{plan}{also}: {reason}"),
    )
}
