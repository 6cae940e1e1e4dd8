//! Operator workflows for the key registry: register a key for a tenant and plan, rotate
//! (a new active key and the old one retired in one replicated entry), revoke (in force on
//! every reachable node before the answer). Every change is audited (`decision: configured`).

use std::time::Duration;

use stella_api::{KeyChange, KeyInfo, RegisterKeyRequest, RevokeKeyRequest};
use stella_signer::PublicKey;
use stella_state::Command;
use stella_state::command::{KeyEntry, KeyState};

use crate::Error;
use crate::admission::Caller;
use crate::admission::optok::{SCOPE_ADMIN, SCOPE_AUDIT_ALL};
use crate::pipeline::{self, Configured};
use crate::signing::{ConfigChange, SigningService, rfc3339_ms};

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Active => "active",
        KeyState::Retired => "retired",
        KeyState::Revoked => "revoked",
    }
}

/// The registry as the caller may see it.
pub fn list(service: &SigningService, caller: &Caller) -> Vec<KeyInfo> {
    let all = caller.has_scope(SCOPE_ADMIN) || caller.has_scope(SCOPE_AUDIT_ALL);
    service.cluster().view().with_state(|s| {
        s.keys
            .values()
            .filter(|k| all || k.owner_tenant == caller.tenant)
            .map(|k| KeyInfo {
                key_id: k.key_id.clone(),
                tenant: k.owner_tenant.clone(),
                plan: k.plan.clone(),
                source: crate::keys::source_kind(&k.source).to_owned(),
                algorithm: k.algorithm.clone(),
                state: state_name(k.state).into(),
                public_key_pem: k.public_key_pem.clone(),
                created_at: rfc3339_ms(k.created_ms),
                updated_at: rfc3339_ms(k.updated_ms),
                reason: k.reason.clone(),
                threshold: s
                    .threshold_groups
                    .get(&k.key_id)
                    .map(|g| stella_api::ThresholdInfo {
                        min_signers: g.min_signers,
                        holders: g.holders.iter().map(|(_, node)| *node).collect(),
                    }),
            })
            .collect()
    })
}

/// Verification material for offline use: every active and retired key (the node's default
/// key as tenant `*`) and the keyless CA chains.
pub fn trust(
    service: &SigningService,
    caller: &Caller,
    keyless: &crate::http::KeylessTrust,
) -> stella_api::TrustMaterial {
    let mut keys: Vec<KeyInfo> = list(service, caller)
        .into_iter()
        .filter(|k| k.state != "revoked")
        .collect();
    let default = service.keyring().default_key().descriptor();
    keys.push(KeyInfo {
        key_id: default.key_id.clone(),
        tenant: "*".into(),
        plan: "*".into(),
        source: default.source.as_str().into(),
        algorithm: default.algorithm.to_string(),
        state: "active".into(),
        public_key_pem: default.public_key.to_pem(),
        created_at: String::new(),
        updated_at: String::new(),
        reason: "the node's default key (tenants and plans without registered keys)".into(),
        threshold: None,
    });
    stella_api::TrustMaterial {
        keys,
        certificate_authorities: keyless.certificate_authorities.clone(),
        timestamp_authorities: keyless.timestamp_authorities.clone(),
    }
}

/// Registers a key (and with `rotate`, retires the tenant/plan's active keys atomically).
pub async fn register(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    request: RegisterKeyRequest,
) -> Result<KeyChange, Error> {
    let reason = pipeline::operator_reason(&request.reason)?;
    if request.tenant.is_empty() || request.plan.is_empty() {
        return Err(Error::InvalidRequest("tenant and plan are required".into()));
    }
    let public_key = PublicKey::from_pem(&request.public_key_pem)
        .map_err(|e| Error::InvalidRequest(format!("publicKeyPem: {e}")))?;
    let source = match (request.source.as_deref().unwrap_or("file"), &request.label) {
        ("file", None) => "file".to_owned(),
        ("pkcs11", Some(label)) if !label.is_empty() => format!("pkcs11:{label}"),
        (other, _) => {
            return Err(Error::InvalidRequest(format!(
                "source `{other}`: use file, or pkcs11 with a label"
            )));
        }
    };
    let now_ms = service.now_ms();
    let entry = KeyEntry {
        key_id: public_key.key_id(),
        owner_tenant: request.tenant.clone(),
        plan: request.plan.clone(),
        source,
        algorithm: "ECDSA_P256_SHA256".into(),
        public_key_pem: public_key.to_pem(),
        state: KeyState::Active,
        created_ms: now_ms,
        updated_ms: now_ms,
        reason: reason.clone(),
    };
    // The private key must be in place (this node checks its own copy) before the key can be
    // made active: a registered key nobody can use would stop the tenant's signing.
    let (loader, probe) = (service.clone(), entry.clone());
    tokio::task::spawn_blocking(move || loader.keyring().load(&probe))
        .await
        .map_err(|e| Error::Unavailable(format!("loading the key: {e}")))?
        .map_err(|e| Error::InvalidRequest(format!("install the private key first: {e}")))?;
    let register = Command::RegisterKey(entry.clone());
    registered(
        service,
        caller,
        request_id,
        entry,
        register,
        request.rotate,
        "key",
        &reason,
    )
    .await
}

/// Registers `entry` with `register` (and with `rotate`, retires the tenant/plan's active keys
/// in the same replicated entry), audited; answers once every reachable member applied it.
#[allow(clippy::too_many_arguments)]
async fn registered(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    entry: KeyEntry,
    register: Command,
    rotate: bool,
    what: &str,
    reason: &str,
) -> Result<KeyChange, Error> {
    let now_ms = service.now_ms();
    let retired: Vec<String> = if rotate {
        service.cluster().view().with_state(|s| {
            s.keys
                .values()
                .filter(|k| {
                    k.owner_tenant == entry.owner_tenant
                        && k.plan == entry.plan
                        && k.state == KeyState::Active
                })
                .map(|k| k.key_id.clone())
                .collect()
        })
    } else {
        Vec::new()
    };
    let actor = format!("{}@{}", caller.subject, caller.tenant);
    let mut commands = vec![register];
    commands.extend(retired.iter().map(|key_id| Command::SetKeyState {
        key_id: key_id.clone(),
        state: KeyState::Retired,
        reason: format!("rotated to {}: {reason}", entry.key_id),
        actor: actor.clone(),
        now_ms,
    }));
    let audit = pipeline::configured_draft(Configured {
        time: service.now_rfc3339(),
        request_id,
        caller,
        subject_digests: Vec::new(),
        state: if retired.is_empty() {
            "key_registered"
        } else {
            "key_rotated"
        },
        reason: format!(
            "{what} {} active for {}/{}{}: {reason}",
            entry.key_id,
            entry.owner_tenant,
            entry.plan,
            if retired.is_empty() {
                String::new()
            } else {
                format!(", retired {}", retired.join(", "))
            }
        ),
    });
    applied_everywhere(
        service,
        entry.key_id,
        ConfigChange { commands, audit },
        retired,
    )
    .await
}

/// Applies a key change through the leader (audited), then waits for the reachable members.
async fn applied_everywhere(
    service: &SigningService,
    key_id: String,
    change: ConfigChange,
    retired: Vec<String>,
) -> Result<KeyChange, Error> {
    let applied = service.configure(change).await?;
    Ok(KeyChange {
        key_id,
        audit_id: applied.audit_id,
        retired,
        applied_on: confirm_applied(service).await,
    })
}

/// Makes a threshold key by a distributed key generation across the nodes (the leader drives
/// it), then registers it for the tenant and plan — with `rotate`, retiring their active keys
/// in the same replicated entry.
pub async fn create_threshold(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    request: stella_api::CreateThresholdKeyRequest,
) -> Result<KeyChange, Error> {
    let reason = pipeline::operator_reason(&request.reason)?;
    if request.tenant.is_empty() || request.plan.is_empty() {
        return Err(Error::InvalidRequest("tenant and plan are required".into()));
    }
    let done = service
        .generate_threshold_key(crate::threshold::KeygenJob {
            min_signers: request.min_signers,
            nodes: request.nodes.clone(),
            refresh: None,
        })
        .await?;
    let group = stella_signer::threshold::GroupKey::from_bytes(&done.public_key_package)
        .map_err(|e| Error::Unavailable(format!("the key generation's group key: {e}")))?;
    let public_key = group
        .public_key()
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let now_ms = service.now_ms();
    let entry = KeyEntry {
        key_id: public_key.key_id(),
        owner_tenant: request.tenant.clone(),
        plan: request.plan.clone(),
        source: crate::keys::THRESHOLD_SOURCE.into(),
        algorithm: stella_signer::SignatureAlgorithm::Bip340Secp256k1Sha256.to_string(),
        public_key_pem: public_key.to_pem(),
        state: KeyState::Active,
        created_ms: now_ms,
        updated_ms: now_ms,
        reason: reason.clone(),
    };
    let holders: Vec<u64> = done.holders.iter().map(|(_, node)| *node).collect();
    let summary = format!(
        "{}-of-{} threshold key on nodes {holders:?}",
        request.min_signers,
        holders.len()
    );
    let register = Command::RegisterThresholdKey {
        entry: entry.clone(),
        group: stella_state::command::ThresholdGroup {
            min_signers: request.min_signers,
            holders: done.holders,
            public_key_package: done.public_key_package,
        },
    };
    registered(
        service,
        caller,
        request_id,
        entry,
        register,
        request.rotate,
        &summary,
        &reason,
    )
    .await
}

/// Refreshes a threshold key's shares among some or all of its holders (the leader drives it):
/// the same key, new shares; holders left out lose theirs. Answers once every reachable member
/// applied the new group.
pub async fn refresh_threshold(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    request: stella_api::RefreshThresholdKeyRequest,
) -> Result<KeyChange, Error> {
    let reason = pipeline::operator_reason(&request.reason)?;
    let before = service
        .cluster()
        .view()
        .with_state(|s| s.threshold_groups.get(&request.key_id).cloned())
        .ok_or_else(|| {
            Error::InvalidRequest(format!("`{}` is not a threshold key", request.key_id))
        })?;
    let done = service
        .generate_threshold_key(crate::threshold::KeygenJob {
            min_signers: before.min_signers,
            nodes: request.nodes.clone(),
            refresh: Some(request.key_id.clone()),
        })
        .await?;
    let kept: Vec<u64> = done.holders.iter().map(|(_, node)| *node).collect();
    let dropped: Vec<u64> = before
        .holders
        .iter()
        .map(|(_, node)| *node)
        .filter(|node| !kept.contains(node))
        .collect();
    let audit = pipeline::configured_draft(Configured {
        time: service.now_rfc3339(),
        request_id,
        caller,
        subject_digests: Vec::new(),
        state: "key_refreshed",
        reason: format!(
            "threshold key {} refreshed: holders {kept:?}, left out {dropped:?}: {reason}",
            request.key_id
        ),
    });
    let change = ConfigChange {
        commands: vec![Command::UpdateThresholdGroup {
            key_id: request.key_id.clone(),
            group: stella_state::command::ThresholdGroup {
                min_signers: before.min_signers,
                holders: done.holders,
                public_key_package: done.public_key_package,
            },
        }],
        audit,
    };
    applied_everywhere(service, request.key_id, change, Vec::new()).await
}

/// Revokes a key; answers once every reachable member has applied the revocation.
pub async fn revoke(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    request: RevokeKeyRequest,
) -> Result<KeyChange, Error> {
    let reason = pipeline::operator_reason(&request.reason)?;
    let tenant = service
        .cluster()
        .view()
        .with_state(|s| s.keys.get(&request.key_id).map(|k| k.owner_tenant.clone()))
        .ok_or_else(|| Error::InvalidRequest(format!("no key `{}`", request.key_id)))?;
    let audit = pipeline::configured_draft(Configured {
        time: service.now_rfc3339(),
        request_id,
        caller,
        subject_digests: Vec::new(),
        state: "key_revoked",
        reason: format!("key {} of {tenant} revoked: {reason}", request.key_id),
    });
    let change = ConfigChange {
        commands: vec![Command::SetKeyState {
            key_id: request.key_id.clone(),
            state: KeyState::Revoked,
            reason,
            actor: format!("{}@{}", caller.subject, caller.tenant),
            now_ms: service.now_ms(),
        }],
        audit,
    };
    applied_everywhere(service, request.key_id, change, Vec::new()).await
}

/// Waits (≤ 5 s) until every reachable member has applied what the leader has applied now;
/// returns the members that confirmed.
async fn confirm_applied(service: &SigningService) -> Vec<u64> {
    let cluster = service.cluster();
    let me = cluster.status();
    let leader_url = me
        .leader
        .and_then(|l| me.nodes.get(&l).map(|a| (l, a.peer_url.clone())));
    let target = match leader_url {
        Some((l, _)) if l == me.node_id => me.applied_index.unwrap_or(0),
        Some((_, url)) => cluster
            .peers()
            .get::<stella_cluster::NodeStatus>(&url, "/peer/v1/status", Duration::from_millis(500))
            .await
            .ok()
            .and_then(|s| s.applied_index)
            .unwrap_or(0),
        None => 0,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut confirmed = Vec::new();
    for (id, addr) in &me.nodes {
        loop {
            let applied = if *id == me.node_id {
                cluster.status().applied_index
            } else {
                cluster
                    .peers()
                    .get::<stella_cluster::NodeStatus>(
                        &addr.peer_url,
                        "/peer/v1/status",
                        Duration::from_millis(500),
                    )
                    .await
                    .ok()
                    .and_then(|s| s.applied_index)
            };
            if applied.is_some_and(|a| a >= target) {
                confirmed.push(*id);
                break;
            }
            if applied.is_none() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    confirmed
}
