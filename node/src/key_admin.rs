//! Operator workflows for the key registry: register a key for a tenant and plan, rotate
//! (a new active key and the old one retired in one replicated entry), revoke (in force on
//! every reachable node before the answer). Every change is audited (`decision: configured`).

use std::time::Duration;

use stella_api::{KeyChange, KeyInfo, RegisterKeyRequest, RevokeKeyRequest};
use stella_signer::PublicKey;
use stella_state::command::{KeyEntry, KeyState};

use crate::Error;
use crate::admission::Caller;
use crate::admission::optok::{SCOPE_ADMIN, SCOPE_AUDIT_ALL};
use crate::changes::{ChangeRequest, ConfigChange};
use crate::clock::rfc3339_ms;
use crate::pipeline;
use crate::signing::{ConfigApplied, SigningService};

/// The leader's key-generation endpoint on the peer plane.
pub const PEER_KEYGEN: &str = "/peer/v1/threshold/keygen";

fn state_name(state: KeyState) -> &'static str {
    match state {
        KeyState::Active => "active",
        KeyState::Retired => "retired",
        KeyState::Revoked => "revoked",
        KeyState::Standby => "standby",
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
    keyless: &crate::keyless::KeylessTrust,
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
        audit_log: None,
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
    let kind = request.source.as_deref().unwrap_or("file");
    let source = crate::keys::registry_source(kind, request.label.as_deref()).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "source `{}`: use file, pkcs11 with a label, or kms with the key ARN as label",
            crate::error::clip(kind)
        ))
    })?;
    let public_key = match source.strip_prefix("kms:") {
        Some(key) => kms_public_key(service, key, &request.public_key_pem).await?,
        None => PublicKey::from_pem(&request.public_key_pem)
            .map_err(|e| Error::InvalidRequest(format!("publicKeyPem: {e}")))?,
    };
    let plan = service.admission().plan(&request.plan).map_err(|_| {
        Error::InvalidRequest(format!(
            "plan `{}` is not offered by this signer",
            crate::error::clip(&request.plan)
        ))
    })?;
    crate::key_policy::check_registration(&plan, &source)?;
    // The private key must be in place (this node checks its own copy) before the key can be
    // made active: a registered key nobody can use would stop the tenant's signing.
    let probe = KeyEntry {
        key_id: public_key.key_id(),
        owner_tenant: request.tenant.clone(),
        plan: request.plan.clone(),
        source: source.clone(),
        algorithm: "ECDSA_P256_SHA256".into(),
        public_key_pem: public_key.to_pem(),
        state: KeyState::Active,
        created_ms: 0,
        updated_ms: 0,
        reason: reason.clone(),
    };
    let loader = service.clone();
    tokio::task::spawn_blocking(move || loader.keyring().load(&probe))
        .await
        .map_err(|e| Error::Unavailable(format!("loading the key: {e}")))?
        .map_err(|e| Error::InvalidRequest(format!("install the private key first: {e}")))?;
    let change = ChangeRequest::RegisterKey {
        tenant: request.tenant,
        plan: request.plan,
        source,
        public_key_pem: public_key.to_pem(),
        rotate: request.rotate,
        standby: request.standby,
        reason,
    };
    let applied = service
        .configure(ConfigChange::new(caller, request_id, change))
        .await?;
    confirmed(service, applied).await
}

/// The public key of the KMS key `key`, read from KMS by this node (the key id follows from
/// it); a `publicKeyPem` the operator gave must be the same key. KMS out of reach is a 503
/// (retry), a key KMS refuses or that cannot sign here is the operator's 400.
async fn kms_public_key(
    service: &SigningService,
    key: &str,
    expected_pem: &str,
) -> Result<PublicKey, Error> {
    let (loader, key) = (service.clone(), key.to_owned());
    let signer = tokio::task::spawn_blocking(move || loader.keyring().open_kms(&key))
        .await
        .map_err(|e| Error::Unavailable(format!("opening the KMS key: {e}")))?
        .map_err(|e| match e.is_transient() {
            true => Error::Unavailable(e.to_string()),
            false => Error::InvalidRequest(e.to_string()),
        })?;
    let public_key = signer.descriptor().public_key.clone();
    if !expected_pem.trim().is_empty() {
        let expected = PublicKey::from_pem(expected_pem)
            .map_err(|e| Error::InvalidRequest(format!("publicKeyPem: {e}")))?;
        if expected != public_key {
            return Err(Error::InvalidRequest(format!(
                "publicKeyPem is not the KMS key's public key (KMS names {})",
                public_key.key_id()
            )));
        }
    }
    Ok(public_key)
}

/// Makes a threshold key by a distributed key generation across the nodes, then registers it
/// for the tenant and plan — with `rotate`, retiring their active keys in the same replicated
/// entry. The leader drives both; the group is never something a peer hands it.
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
    let change = ChangeRequest::CreateThresholdKey {
        tenant: request.tenant,
        plan: request.plan,
        suite: match request.suite {
            stella_api::ThresholdSuite::Ed25519 => stella_signer::threshold::SuiteId::Ed25519,
            stella_api::ThresholdSuite::Secp256k1Tr => {
                stella_signer::threshold::SuiteId::Secp256k1Tr
            }
        },
        min_signers: request.min_signers,
        nodes: request.nodes,
        rotate: request.rotate,
        reason,
    };
    let applied =
        generate_threshold_key(service, ConfigChange::new(caller, request_id, change)).await?;
    confirmed(service, applied).await
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
    let change = ChangeRequest::RefreshThresholdKey {
        key_id: request.key_id,
        nodes: request.nodes,
        reason: pipeline::operator_reason(&request.reason)?,
    };
    let applied =
        generate_threshold_key(service, ConfigChange::new(caller, request_id, change)).await?;
    confirmed(service, applied).await
}

/// Revokes a key; answers once every reachable member has applied the revocation.
pub async fn revoke(
    service: &SigningService,
    caller: &Caller,
    request_id: &str,
    request: RevokeKeyRequest,
) -> Result<KeyChange, Error> {
    let change = ChangeRequest::RevokeKey {
        key_id: request.key_id,
        reason: pipeline::operator_reason(&request.reason)?,
    };
    let applied = service
        .configure(ConfigChange::new(caller, request_id, change))
        .await?;
    confirmed(service, applied).await
}

/// The answer to a key change the leader applied (audited), once the reachable members have.
async fn confirmed(service: &SigningService, applied: ConfigApplied) -> Result<KeyChange, Error> {
    Ok(KeyChange {
        key_id: applied.subject.unwrap_or_default(),
        audit_id: applied.audit_id,
        retired: applied.retired,
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

/// A threshold key made or refreshed by a distributed key generation, registered with its
/// audit record: the leader drives both (forwarded there).
pub async fn generate_threshold_key(
    service: &SigningService,
    change: ConfigChange,
) -> Result<ConfigApplied, Error> {
    let leader_side = || generate_as_leader(service, change.clone());
    crate::router::at_leader(
        service.cluster(),
        PEER_KEYGEN,
        &change,
        crate::router::admin_deadline(),
        leader_side,
    )
    .await
}

/// The leader's side of a key generation: the holders are voters (all of them by default);
/// the group it produced is registered in one entry with the audit record.
pub async fn generate_as_leader(
    service: &SigningService,
    change: ConfigChange,
) -> Result<ConfigApplied, Error> {
    let cluster = service.cluster();
    if !cluster.is_leader() || cluster.handing_over() {
        return Err(Error::NotLeader);
    }
    let backend = service
        .keyring()
        .threshold()
        .ok_or_else(|| Error::Unavailable("this node has no threshold back-end".into()))?;
    let voters = cluster.voter_ids();
    let group = match &change.request {
        ChangeRequest::RefreshThresholdKey { key_id, nodes, .. } => {
            let group = cluster
                .view()
                .with_state(|s| {
                    let active = s
                        .keys
                        .get(key_id)
                        .is_some_and(|k| k.state == stella_state::command::KeyState::Active);
                    s.threshold_groups.get(key_id).filter(|_| active).cloned()
                })
                .ok_or_else(|| {
                    Error::InvalidRequest(format!("`{key_id}` is not an active threshold key"))
                })?;
            let nodes: Vec<u64> = if nodes.is_empty() {
                group
                    .holders
                    .iter()
                    .map(|(_, node)| *node)
                    .filter(|node| voters.contains(node))
                    .collect()
            } else {
                nodes.clone()
            };
            if nodes.len() < usize::from(group.min_signers) {
                return Err(Error::InvalidRequest(format!(
                    "a refresh needs at least {} holders",
                    group.min_signers
                )));
            }
            if let Some(outsider) = nodes
                .iter()
                .find(|n| !voters.contains(n) || !group.holders.iter().any(|(_, node)| node == *n))
            {
                return Err(Error::InvalidRequest(format!(
                    "node {outsider} is not a voting holder of {key_id}"
                )));
            }
            let (new_group, holders) =
                crate::threshold::refresh(&backend.holders, key_id, &group, &nodes)
                    .await
                    .map_err(Error::Unavailable)?;
            stella_state::command::ThresholdGroup {
                min_signers: group.min_signers,
                holders,
                public_key_package: new_group
                    .to_bytes()
                    .map_err(|e| Error::Unavailable(e.to_string()))?,
            }
        }
        ChangeRequest::CreateThresholdKey {
            suite,
            min_signers,
            nodes,
            ..
        } => {
            let nodes = if nodes.is_empty() {
                voters.clone()
            } else {
                nodes.clone()
            };
            if let Some(stranger) = nodes.iter().find(|n| !voters.contains(n)) {
                return Err(Error::InvalidRequest(format!(
                    "node {stranger} is not a voting member"
                )));
            }
            let n = nodes.len() as u64;
            if *min_signers < 2 || u64::from(*min_signers) > n {
                return Err(Error::InvalidRequest(format!(
                    "minSigners must be between 2 and the number of holders ({n})"
                )));
            }
            let (group, holders) =
                crate::threshold::generate(&backend.holders, *suite, *min_signers, &nodes)
                    .await
                    .map_err(Error::Unavailable)?;
            stella_state::command::ThresholdGroup {
                min_signers: *min_signers,
                holders,
                public_key_package: group
                    .to_bytes()
                    .map_err(|e| Error::Unavailable(e.to_string()))?,
            }
        }
        _ => {
            return Err(Error::InvalidRequest(
                "not a threshold key generation".into(),
            ));
        }
    };
    service.configured(&change, Some(&group)).await
}
