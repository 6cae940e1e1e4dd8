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
    let retired: Vec<String> = if request.rotate {
        service.cluster().view().with_state(|s| {
            s.keys
                .values()
                .filter(|k| {
                    k.owner_tenant == request.tenant
                        && k.plan == request.plan
                        && k.state == KeyState::Active
                })
                .map(|k| k.key_id.clone())
                .collect()
        })
    } else {
        Vec::new()
    };
    let actor = format!("{}@{}", caller.subject, caller.tenant);
    let mut commands = vec![Command::RegisterKey(entry.clone())];
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
            "key {} active for {}/{}{}: {reason}",
            entry.key_id,
            request.tenant,
            request.plan,
            if retired.is_empty() {
                String::new()
            } else {
                format!(", retired {}", retired.join(", "))
            }
        ),
    });
    let applied = service.configure(ConfigChange { commands, audit }).await?;
    Ok(KeyChange {
        key_id: entry.key_id,
        audit_id: applied.audit_id,
        retired,
        applied_on: confirm_applied(service).await,
    })
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
    let applied = service
        .configure(ConfigChange {
            commands: vec![Command::SetKeyState {
                key_id: request.key_id.clone(),
                state: KeyState::Revoked,
                reason,
                actor: format!("{}@{}", caller.subject, caller.tenant),
                now_ms: service.now_ms(),
            }],
            audit,
        })
        .await?;
    Ok(KeyChange {
        key_id: request.key_id,
        audit_id: applied.audit_id,
        retired: Vec::new(),
        applied_on: confirm_applied(service).await,
    })
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
