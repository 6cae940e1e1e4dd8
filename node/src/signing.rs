//! The signing service: admit on the receiving node, then reserve → sign → audit on the leader.
//!
//! Every node accepts requests. The receiving node authenticates the caller (OpTok + DPoP or
//! mTLS) and establishes the entitlement (PoE, plan), then forwards the admitted job to the
//! leader over the peer channel (re-routing when leadership moves); only the leader signs, so
//! quota, proof-replay and audit decisions are made where Raft linearizes them. On the leader a
//! job claims its DPoP proof and reserves quota in one Raft entry (`Admit`), signs, then commits
//! its audit record together with the reservation commit in one Raft entry, and only then
//! answers. Every refusal by admission is audited too. A session dropped half-way (client gone,
//! task cancelled, panic) releases its reservation through `ReservationGuard`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stella_api::{QuotaStatus, SignDsseRequest, SignDsseResponse};
use stella_cluster::ClusterHandle;
use stella_signer::{Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner};
use stella_state::command::{Admit, ProofClaim, Reserve, Response};
use stella_state::{AuditDraft, Command, Decision};

use crate::Error;
use crate::admission::provenance::{self, Provenance};
use crate::admission::{
    Admission, Authenticated, BYPASS_TOGGLE, Caller, RequestFacts, optok::SCOPE_SIGN,
};
use crate::changes::{self, ChangeRequest, ConfigChange};
use crate::clock::Clock;
use crate::config::QuotaConfig;
use crate::keys::Keyring;
use crate::ledger::{Ledger, ProposeError};
use crate::pipeline::{self, POE_UNCHECKED, Refusal};
use crate::session::Sessions;

pub use crate::attempts::LiveAttempts;
use crate::attempts::ReservationGuard;
pub use crate::backends::{Backends, MAX_SIGNINGS_PER_BACKEND};
pub use crate::router::ForwardAnswer;
use stella_state::command::Outcome;

pub const PEER_SIGN: &str = "/peer/v1/sign";
pub const PEER_AUDIT: &str = "/peer/v1/audit";
pub const PEER_CONFIGURE: &str = "/peer/v1/configure";
pub const PEER_KEYGEN: &str = "/peer/v1/threshold/keygen";
/// What the leader answered to a configuration change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigApplied {
    pub audit_id: String,
    /// The change's key id or approval id, when it has one.
    pub subject: Option<String>,
    /// Keys a rotation retired.
    pub retired: Vec<String>,
    /// The leader's applied log index once the change applied (a node that has applied this
    /// far reads the change back).
    pub applied_index: u64,
}
/// How long one signing operation may take (an HSM that hangs gets 503, not a stuck request).
const SIGN_TIMEOUT: Duration = Duration::from_secs(10);
/// An admitted signing request, as the leader runs it (forwarded by a follower, or local).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignJob {
    pub tenant: String,
    pub caller_subject: String,
    pub issuer: String,
    pub request_id: String,
    /// The plan the receiving node entitled the caller to, by name: its limits are the
    /// leader's own configuration, never numbers a peer sends.
    pub plan: String,
    pub poe_state: String,
    /// The DPoP proof to claim cluster-wide (absent for mTLS-bound tokens).
    pub proof: Option<ProofClaim>,
    /// How the scanner release was trusted, when the request needed it.
    pub provenance: Option<String>,
    /// The caller's credentials as presented (threshold share holders verify them again).
    pub credentials: Credentials,
    /// The caller's `Idempotency-Key` (callers without a DPoP proof; `docs/api.md`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub request: SignDsseRequest,
}

/// A caller's credentials exactly as the receiving node got them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub authorization: String,
    pub dpop: Option<String>,
    pub client_cert_sha256: Option<String>,
}

impl SignJob {
    fn caller(&self) -> Caller {
        Caller {
            tenant: self.tenant.clone(),
            subject: self.caller_subject.clone(),
            issuer: self.issuer.clone(),
            scopes: Vec::new(),
        }
    }
}

/// What the signing service is built from (see `app.rs`).
pub struct SigningParts {
    pub keyring: Keyring,
    pub ledger: Ledger,
    pub sessions: Sessions,
    pub cluster: ClusterHandle,
    pub clock: Arc<dyn Clock>,
    pub quota: QuotaConfig,
    pub admission: Arc<Admission>,
    pub provenance: Option<Arc<Provenance>>,
    pub backends: Backends,
    /// How long a signing request may take from admission to answer.
    pub request_deadline: Duration,
    /// Reservations whose session runs on this node now.
    pub live: LiveAttempts,
}

#[derive(Clone)]
pub struct SigningService {
    inner: Arc<SigningParts>,
}

impl SigningService {
    pub fn new(parts: SigningParts) -> SigningService {
        SigningService {
            inner: Arc::new(parts),
        }
    }

    pub fn cluster(&self) -> &ClusterHandle {
        &self.inner.cluster
    }

    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Step 1 on the receiving node: token and sender binding. A refusal of a caller whose
    /// token verified is audited on its own; one before that is counted by admission and
    /// audited in the node's periodic summary ([`SigningService::audit_preauth_summary`]).
    pub async fn authenticate(
        &self,
        facts: &RequestFacts,
        request_id: &str,
    ) -> Result<Authenticated, Error> {
        let failure = match self
            .inner
            .admission
            .authenticate_detailed(facts, &[SCOPE_SIGN])
            .await
        {
            Ok(authn) => return Ok(authn),
            Err(failure) => failure,
        };
        if let Some(caller) = &failure.caller {
            self.refused(Refusal {
                time: self.inner.clock.now_rfc3339(),
                request_id,
                caller: Some(caller),
                request: None,
                poe_state: POE_UNCHECKED,
                plan_name: None,
                error: &failure.error,
            })
            .await;
        }
        Err(failure.error)
    }

    /// Audits the refusals before authentication counted since the last call, as one record of
    /// this node (bounded in size whatever the traffic was). Nothing to write: nothing happens.
    pub async fn audit_preauth_summary(&self) {
        let Some(summary) = self.inner.admission.take_preauth_summary() else {
            return;
        };
        let node = self.inner.cluster.node_id();
        let draft = pipeline::preauth_draft(
            self.inner.clock.now_rfc3339(),
            &format!("preauth-node-{node}-{}", summary.to_ms),
            &summary,
        );
        if let Err(e) = self.audit_at_leader(draft).await {
            metrics::counter!("stella_signer_refusal_audit_failures_total").increment(1);
            tracing::error!(error = %e, total = summary.total, "the pre-authentication summary could not be audited");
        }
    }

    /// Appends `draft` to the audit log through the leader (here or forwarded).
    async fn audit_at_leader(&self, draft: AuditDraft) -> Result<String, Error> {
        let leader_side = || self.audit_as_leader(draft.clone());
        crate::router::at_leader(
            &self.inner.cluster,
            PEER_AUDIT,
            &draft,
            crate::router::admin_deadline(),
            leader_side,
        )
        .await
    }

    /// Steps 2–7 for an authenticated caller: entitlement and plan here, then the leader.
    pub async fn sign(
        &self,
        facts: &RequestFacts,
        authn: Authenticated,
        request_id: &str,
        request: SignDsseRequest,
        body_bytes: usize,
    ) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let bypass_on = self.poe_bypass_on();
        let admission = &self.inner.admission;
        let entitled = admission
            .entitle(
                &authn,
                request.poe.as_ref(),
                facts.client_cert_sha256.as_deref(),
                bypass_on,
            )
            .await
            .and_then(|e| {
                if body_bytes > e.plan.max_artifact_bytes {
                    return Err(Error::TooLarge {
                        limit: e.plan.max_artifact_bytes,
                    });
                }
                Ok(e)
            });
        let entitled = match entitled {
            Ok(e) => e,
            Err(e) => {
                self.refused(Refusal {
                    time: self.inner.clock.now_rfc3339(),
                    request_id,
                    caller: Some(&authn.caller),
                    request: Some(&request),
                    poe_state: POE_UNCHECKED,
                    plan_name: None,
                    error: &e,
                })
                .await;
                self.log_rejection(&authn.caller, &e, started);
                return Err(e);
            }
        };
        let provenance = match self.check_provenance(&request).await {
            Ok(path) => path,
            Err(e) => {
                self.refused(Refusal {
                    time: self.inner.clock.now_rfc3339(),
                    request_id,
                    caller: Some(&authn.caller),
                    request: Some(&request),
                    poe_state: entitled.poe_state,
                    plan_name: Some(&entitled.plan.name),
                    error: &e,
                })
                .await;
                self.log_rejection(&authn.caller, &e, started);
                return Err(e);
            }
        };
        metrics::counter!(crate::telemetry::POE_STATE, "state" => entitled.poe_state).increment(1);
        let idempotency_key = pipeline::idempotency_key(&facts.idempotency_key)?;
        let policy = admission.proof_policy();
        let job = SignJob {
            tenant: authn.caller.tenant.clone(),
            caller_subject: authn.caller.subject.clone(),
            issuer: authn.caller.issuer.clone(),
            request_id: request_id.to_owned(),
            plan: entitled.plan.name,
            poe_state: entitled.poe_state.to_owned(),
            proof: authn.proof.as_ref().map(|p| ProofClaim {
                key: p.replay_key(),
                expires_at_ms: u64::try_from(p.replay_window_end(policy))
                    .unwrap_or(0)
                    .saturating_mul(1000),
            }),
            provenance,
            credentials: Credentials {
                authorization: facts.authorization.first().cloned().unwrap_or_default(),
                dpop: facts.dpop.first().cloned(),
                client_cert_sha256: facts.client_cert_sha256.clone(),
            },
            idempotency_key,
            request,
        };
        let leader_side = || self.sign_as_leader(job.clone());
        let deadline = tokio::time::Instant::from_std(started) + self.inner.request_deadline;
        let result =
            crate::router::at_leader(&self.inner.cluster, PEER_SIGN, &job, deadline, leader_side)
                .await;
        if let Err(e) = &result {
            self.log_rejection(&authn.caller, e, started);
        }
        result
    }

    /// Step 3: the scanner release behind an SBOM or report must be trusted — allowlisted,
    /// approved, or carrying a verified release signature. `None`: not required.
    async fn check_provenance(&self, request: &SignDsseRequest) -> Result<Option<String>, Error> {
        let Some(checker) = &self.inner.provenance else {
            return Ok(None);
        };
        if !checker.required_for(&request.predicate_type) {
            return Ok(None);
        }
        let digest = request.scanner_image_digest.as_deref().ok_or_else(|| {
            Error::ReleaseUntrusted(format!(
                "`scannerImageDigest` is required for {}",
                request.predicate_type
            ))
        })?;
        stella_release::parse_digest(digest).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        let now_ms = self.now_ms();
        let replicated = self
            .inner
            .cluster
            .view()
            .with_state(|s| provenance::replicated_path(s, digest, now_ms));
        let path = match replicated {
            Some(path) => path,
            None => checker.by_signature(digest).await?,
        };
        Ok(Some(path.describe()))
    }

    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    pub fn provenance(&self) -> Option<&Provenance> {
        self.inner.provenance.as_deref()
    }

    fn log_rejection(&self, caller: &Caller, e: &Error, started: Instant) {
        metrics::counter!(crate::telemetry::ADMISSION_DENIALS, "code" => e.code().as_str())
            .increment(1);
        tracing::info!(
            target: "stella::sign",
            tenant = %caller.tenant,
            decision = "rejected",
            code = e.code().as_str(),
            reason = %e,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "signing decision"
        );
    }

    /// Audits a refusal (through the leader). A refusal is answered even if the audit cannot
    /// be written (no quorum): the failure is logged and counted.
    async fn refused(&self, refusal: Refusal<'_>) {
        // A nonce challenge is part of the DPoP protocol, not a decision about the caller.
        if matches!(refusal.error, Error::DpopNonce(_) | Error::Unavailable(_)) {
            return;
        }
        if let Err(e) = self.audit_at_leader(pipeline::refusal_draft(refusal)).await {
            metrics::counter!("stella_signer_refusal_audit_failures_total").increment(1);
            tracing::error!(error = %e, "a refusal could not be audited");
        }
    }

    /// Whether the PoE emergency bypass is in force, as this node has applied it.
    pub fn poe_bypass_on(&self) -> bool {
        let now_ms = self.now_ms();
        self.inner
            .cluster
            .view()
            .with_state(|s| s.toggle_enabled(BYPASS_TOGGLE, now_ms))
    }

    /// The PoE bypass as this node has applied it.
    pub fn poe_bypass(&self) -> stella_api::ToggleStatus {
        let now_ms = self.now_ms();
        self.inner.cluster.view().with_state(|s| {
            let toggle = s.toggles.get(BYPASS_TOGGLE);
            stella_api::ToggleStatus {
                name: BYPASS_TOGGLE.into(),
                active: s.toggle_enabled(BYPASS_TOGGLE, now_ms),
                enabled: toggle.is_some_and(|t| t.enabled),
                reason: toggle.map(|t| t.reason.clone()).unwrap_or_default(),
                actor: toggle.map(|t| t.actor.clone()).unwrap_or_default(),
                set_at: toggle.map(|t| rfc3339_ms(t.set_ms)),
                expires_at: toggle.and_then(|t| t.expires_at_ms).map(rfc3339_ms),
            }
        })
    }

    /// Switches the PoE emergency bypass; the change is audited in the same Raft entry and is
    /// in force on every node once they apply it.
    pub async fn set_poe_bypass(
        &self,
        caller: &Caller,
        request_id: &str,
        change: stella_api::PoeBypassRequest,
    ) -> Result<stella_api::ToggleStatus, Error> {
        let enabled = change.enabled;
        let request = ChangeRequest::PoeBypass {
            enabled,
            reason: pipeline::operator_reason(&change.reason)?,
            expires_in_seconds: change.expires_in_seconds,
        };
        let applied = self
            .configure(ConfigChange::new(caller, request_id, request))
            .await?;
        let actor = format!("{}@{}", caller.subject, caller.tenant);
        tracing::warn!(toggle = BYPASS_TOGGLE, enabled, actor = %actor, audit_id = %applied.audit_id, "PoE bypass changed");
        // The leader applied it; give this node a moment to apply it too, so the answer reads
        // the change back (every node applies it within a heartbeat or so).
        // (If it has not within the bound, the answer reads this node's state a moment early.)
        let _ = self
            .inner
            .cluster
            .wait_applied(applied.applied_index, Duration::from_secs(2))
            .await;
        Ok(self.poe_bypass())
    }

    /// A threshold key made or refreshed by a distributed key generation, registered with its
    /// audit record: the leader drives both (forwarded there).
    pub async fn generate_threshold_key(
        &self,
        change: ConfigChange,
    ) -> Result<ConfigApplied, Error> {
        let leader_side = || self.generate_as_leader(change.clone());
        crate::router::at_leader(
            &self.inner.cluster,
            PEER_KEYGEN,
            &change,
            crate::router::admin_deadline(),
            leader_side,
        )
        .await
    }

    /// The leader's side of a key generation: the holders are voters (all of them by default);
    /// the group it produced is registered in one entry with the audit record.
    pub async fn generate_as_leader(&self, change: ConfigChange) -> Result<ConfigApplied, Error> {
        let cluster = &self.inner.cluster;
        if !cluster.is_leader() || cluster.handing_over() {
            return Err(Error::NotLeader);
        }
        let backend = self
            .inner
            .keyring
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
                if let Some(outsider) = nodes.iter().find(|n| {
                    !voters.contains(n) || !group.holders.iter().any(|(_, node)| node == *n)
                }) {
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
        self.configured(&change, Some(&group)).await
    }

    /// Applies a change through the leader, with its audit record in the same entry.
    pub async fn configure(&self, change: ConfigChange) -> Result<ConfigApplied, Error> {
        let leader_side = || self.configure_as_leader(change.clone());
        crate::router::at_leader(
            &self.inner.cluster,
            PEER_CONFIGURE,
            &change,
            crate::router::admin_deadline(),
            leader_side,
        )
        .await
    }

    /// The leader's side of a configuration change (never a key generation's: those carry a
    /// group only [`SigningService::generate_as_leader`] may produce).
    pub async fn configure_as_leader(&self, change: ConfigChange) -> Result<ConfigApplied, Error> {
        if !self.inner.cluster.is_leader() || self.inner.cluster.handing_over() {
            return Err(Error::NotLeader);
        }
        self.configured(&change, None).await
    }

    /// Plans `change` against this leader's state and proposes it as one `Configure` entry. A
    /// refused change applies nothing and is not audited as done.
    async fn configured(
        &self,
        change: &ConfigChange,
        generated: Option<&stella_state::command::ThresholdGroup>,
    ) -> Result<ConfigApplied, Error> {
        let now_ms = self.now_ms();
        let time = self.inner.clock.now_rfc3339();
        let planned = self
            .inner
            .cluster
            .view()
            .with_state(|s| changes::plan(s, change, generated, now_ms, time))?;
        let proposal = Command::Configure {
            commands: planned.commands,
            audit: planned.audit,
        };
        match self.propose(proposal).await? {
            Response::Configured {
                audit_id: Some(audit_id),
                ..
            } => Ok(ConfigApplied {
                audit_id,
                subject: planned.subject,
                retired: planned.retired,
                applied_index: self.inner.cluster.status().applied_index.unwrap_or(0),
            }),
            Response::Configured { responses, .. } => {
                let refused = responses.iter().find(|r| r.is_refused_change());
                Err(match refused {
                    Some(Response::ApprovalLimitReached) => Error::too_many_pending_approvals(),
                    Some(other) => {
                        Error::InvalidRequest(format!("the change was not applied: {other:?}"))
                    }
                    None => Error::Unavailable("the change was not audited".into()),
                })
            }
            other => Err(Error::Unavailable(format!(
                "unexpected answer to a configuration change: {other:?}"
            ))),
        }
    }

    /// The leader's side: runs the job in its own supervised session. Answers `NotLeader`
    /// (never forwards) when this node is not the leader.
    pub async fn sign_as_leader(&self, job: SignJob) -> Result<SignDsseResponse, Error> {
        // A leader handing over takes no new work: the forwarder waits for the next one.
        let cluster = &self.inner.cluster;
        if cluster.handing_over() {
            return Err(Error::NotLeader);
        }
        // A leader past its lease is cut off from its quorum (or was frozen): it refuses at
        // once, and the caller retries (by then another node may lead).
        if cluster.lease_lapsed() {
            return Err(Error::Unavailable(
                "the leader lost contact with its quorum; retry".into(),
            ));
        }
        let mut response = self.inner.sessions.run(self.clone(), job).await?;
        // The record is applied here (its `Finish` answered), so its leaf is known.
        response.log_entry =
            crate::transparency::log_entry(cluster.view(), &response.audit_id).ok();
        Ok(response)
    }

    /// The leader's side of auditing a refusal.
    pub async fn audit_as_leader(&self, draft: AuditDraft) -> Result<String, Error> {
        match self.propose(Command::Audit(draft)).await? {
            Response::Audited { audit_id, .. } => Ok(audit_id),
            other => Err(Error::Unavailable(format!(
                "unexpected audit answer: {other:?}"
            ))),
        }
    }

    /// Admit (proof + quota) → sign → audit → respond (what a session runs).
    pub async fn leader_pipeline(&self, job: SignJob) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let inner = &self.inner;
        let caller = job.caller();
        let request_id = job.request_id.as_str();
        let refused = async |e: Error, request: &SignDsseRequest| {
            let refusal = Refusal {
                time: inner.clock.now_rfc3339(),
                request_id,
                caller: Some(&caller),
                request: Some(request),
                poe_state: &job.poe_state,
                plan_name: Some(&job.plan),
                error: &e,
            };
            // Already on the leader: audit directly.
            let _ = self.audit_as_leader(pipeline::refusal_draft(refusal)).await;
            e
        };
        let limits = match inner.admission.plan(&job.plan) {
            Ok(limits) => limits,
            Err(e) => return Err(refused(e, &job.request).await),
        };
        let plan = pipeline::plan(job.request.clone())?;
        let reservation_id = format!("{request_id}/{}", random_suffix());
        // The key registry decides which key signs for this tenant and plan (on the leader,
        // whose applied state is the newest). The choice is made under the state lock; loading
        // a key the first time (a file read, opening an HSM key) happens outside it, on the
        // blocking pool.
        let now_ms = self.now_ms();
        let chosen = if plan.mode == pipeline::MODE_KEYLESS {
            crate::key_policy::check_keyless(&limits)
                .and_then(|()| inner.keyring.keyless().map(|k| vec![k]))
        } else {
            let (selection, standby) = inner.cluster.view().with_state(|state| {
                (
                    crate::keys::select(state, &caller.tenant, &job.plan),
                    crate::key_policy::standby(state.keys.values(), &caller.tenant, &job.plan)
                        .cloned(),
                )
            });
            // The plan's key policy, decided on the registry alone: hardware-backed keys only,
            // no key past its age and grace (ADR 0022).
            let policy = match &selection {
                crate::keys::Selection::Registered(entries) => {
                    let keys: Vec<_> = entries.iter().map(|(k, _)| k).collect();
                    crate::key_policy::check_signing(&limits, &keys, now_ms)
                }
                crate::keys::Selection::Default => crate::key_policy::check_default_key(
                    &limits,
                    inner.keyring.default_key().descriptor().source.as_str(),
                ),
                crate::keys::Selection::NoActiveKey => Ok(()),
            }
            .and_then(|()| {
                if plan.mode == pipeline::MODE_KEYFUL_KEYLESS {
                    crate::key_policy::check_keyless(&limits)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = policy {
                return Err(refused(e, &job.request).await);
            }
            if selection == crate::keys::Selection::Default && !limits.shared_default_key {
                let e = Error::EntitlementDenied(format!(
                    "tenant `{}` has no key of its own on plan `{}`, and the plan does not use the shared default key",
                    crate::error::clip(&caller.tenant),
                    crate::error::clip(&job.plan)
                ));
                return Err(refused(e, &job.request).await);
            }
            let (service, tenant, plan_name, admission) = (
                self.clone(),
                caller.tenant.clone(),
                job.plan.clone(),
                reservation_id.clone(),
            );
            let keyful = tokio::task::spawn_blocking(move || {
                service.inner.keyring.signers_for(
                    selection,
                    standby.as_ref(),
                    &tenant,
                    &plan_name,
                    &admission,
                )
            })
            .await
            .unwrap_or_else(|e| Err(Error::Unavailable(format!("loading the key: {e}"))));
            if plan.mode == pipeline::MODE_KEYFUL_KEYLESS {
                keyful.and_then(|mut signers| {
                    signers.push(inner.keyring.keyless()?);
                    Ok(signers)
                })
            } else {
                keyful
            }
        };
        let signers = match chosen {
            Ok(signers) => signers,
            Err(e) => return Err(refused(e, &job.request).await),
        };
        let primary = signers
            .first()
            .map(|s| s.descriptor().clone())
            .ok_or_else(|| Error::Unavailable("no key for tenant".into()))?;
        let key_source = primary.source.as_str();

        // 1. Claim the DPoP proof and reserve quota through Raft, in one entry — with the
        //    caller's evidence when a threshold key signs, for its holders to re-check.
        let threshold_keys: Vec<String> = signers
            .iter()
            .map(|s| s.descriptor())
            .filter(|d| d.source == stella_signer::KeySource::Threshold)
            .map(|d| d.key_id.clone())
            .collect();
        let identity = pipeline::identity(pipeline::IdentityFacts {
            proof: job.proof.as_ref(),
            idempotency_key: job.idempotency_key.as_deref(),
            authorization: &job.credentials.authorization,
            tenant: &caller.tenant,
            subject: &caller.subject,
            client_cert_sha256: job.credentials.client_cert_sha256.as_deref(),
            request: &job.request,
            now_ms: self.now_ms(),
            window_ms: inner.admission.idempotency_window_ms(),
        })?;
        let identity_key = identity.as_ref().map(|i| i.key.clone());
        // From before the admission on: a retry meeting this attempt's reservation can tell
        // it still runs.
        let _running = inner.live.enter(&reservation_id);
        let admit = Command::AdmitOnce(stella_state::command::AdmitOnce {
            admit: Admit {
                // The identity carries the proof (bound to token and request).
                proof: if identity.is_some() {
                    None
                } else {
                    job.proof.clone()
                },
                reserve: Reserve {
                    reservation_id: reservation_id.clone(),
                    tenant: caller.tenant.clone(),
                    plan: job.plan.clone(),
                    limit: limits.signatures_per_window,
                    window_ms: limits.window_seconds.saturating_mul(1000),
                    max_concurrent: limits.max_concurrent,
                    now_ms: self.now_ms(),
                    ttl_ms: inner.quota.reservation_ttl_seconds * 1000,
                },
            },
            identity,
            evidence: (!threshold_keys.is_empty()).then(|| {
                stella_state::command::AdmissionEvidence {
                    tenant: caller.tenant.clone(),
                    plan: job.plan.clone(),
                    key_ids: threshold_keys,
                    statement_sha256: plan.statement_sha256.clone(),
                    authorization: job.credentials.authorization.clone(),
                    dpop: job.credentials.dpop.clone(),
                    client_cert_sha256: job.credentials.client_cert_sha256.clone(),
                    poe_state: job.poe_state.clone(),
                }
            }),
        });
        let quota_status = |remaining: u64, window_resets_at_ms: u64| QuotaStatus {
            plan: job.plan.clone(),
            limit: limits.signatures_per_window,
            remaining,
            window_resets_at: rfc3339_ms(window_resets_at_ms),
            poe_state: job.poe_state.clone(),
        };
        let (remaining, window_resets_at_ms) = match self.propose(admit).await? {
            Response::Reserved {
                remaining,
                window_resets_at_ms,
            } => (remaining, window_resets_at_ms),
            Response::Concluded(outcome) => {
                // Asked before (a retry, or a re-forward after a failover): the committed
                // outcome, not a new decision.
                metrics::counter!(crate::telemetry::IDEMPOTENT_REPLIES).increment(1);
                return match *outcome {
                    Outcome::Signed(signed) => {
                        let (envelope, ops) = pipeline::rebuilt(&plan, &signed.signatures)?;
                        let bundles = pipeline::bundles(&envelope, &ops)?;
                        let sources =
                            self.recorded_sources(&signed.audit_id, &signed.key_source, ops.len());
                        let mut response = pipeline::response(
                            &plan,
                            &envelope,
                            &ops,
                            bundles,
                            &sources,
                            signed.audit_id.clone(),
                            &signed.request_id,
                        )?;
                        response.quota =
                            Some(quota_status(signed.remaining, signed.window_resets_at_ms));
                        Ok(response)
                    }
                    Outcome::Throttled { reason, until_ms } => Err(Error::Throttled {
                        retry_after_seconds: until_ms
                            .saturating_sub(self.now_ms())
                            .div_ceil(1000)
                            .max(1),
                        reason: format!("plan `{}`: {reason:?}", job.plan),
                    }),
                };
            }
            Response::InProgress { reservation_id } => {
                // Same leader term, so this node admitted that attempt: if its session no
                // longer runs (it failed and its release did not commit), release it now — the
                // caller's retry then takes the identity over.
                if !inner.live.contains(&reservation_id) {
                    let _ = self
                        .propose(Command::Release {
                            reservation_id,
                            now_ms: self.now_ms(),
                        })
                        .await;
                }
                return Err(Error::Unavailable(
                    "this request is being signed by an earlier attempt; retry shortly with the same proof or Idempotency-Key".into(),
                ));
            }
            Response::Replayed if job.proof.is_none() => {
                let e = Error::IdempotencyConflict(
                    "this Idempotency-Key was used for a different request".into(),
                );
                return Err(refused(e, &job.request).await);
            }
            Response::Replayed => {
                let e = Error::Unauthenticated(
                    "DPoP proof replayed (its jti was already used in this cluster, for another request or token)".into(),
                );
                return Err(refused(e, &job.request).await);
            }
            Response::Throttled {
                retry_after_ms,
                reason,
            } => {
                metrics::counter!(crate::telemetry::QUOTA_HITS, "plan" => job.plan.clone())
                    .increment(1);
                let e = Error::Throttled {
                    retry_after_seconds: retry_after_ms.div_ceil(1000).max(1),
                    reason: format!("plan `{}`: {reason:?}", job.plan),
                };
                return Err(refused(e, &job.request).await);
            }
            other => {
                return Err(Error::Unavailable(format!(
                    "unexpected reservation answer: {other:?}"
                )));
            }
        };
        let mut guard = ReservationGuard {
            ledger: inner.ledger.clone(),
            reservation_id: Some(reservation_id.clone()),
            now_ms: self.now_ms(),
        };

        // What the audit record says about the signature: the key that made it (for keyless,
        // the ephemeral key) and the certificate serial of a keyless signature.
        struct Made<'a> {
            key_id: &'a str,
            key_source: &'a str,
            certificate_serial: Option<String>,
            bundle_sha256: Option<String>,
            signatures: Vec<stella_state::audit::SignatureRecord>,
        }
        let draft = |decision: Decision, reason: String, made: Made<'_>| {
            pipeline::audit_draft(pipeline::Outcome {
                time: inner.clock.now_rfc3339(),
                request_id,
                caller: &caller,
                plan: &plan,
                key_id: made.key_id,
                key_source: made.key_source,
                poe_state: &job.poe_state,
                plan_name: &job.plan,
                provenance: job.provenance.as_deref(),
                certificate_serial: made.certificate_serial,
                decision,
                reason,
                bundle_sha256: made.bundle_sha256,
                signatures: made.signatures,
            })
        };

        // 2. Sign, off the async workers (an HSM call blocks) and bounded in time (a token
        //    that stops answering must not hold the request forever) and in work: each key
        //    back-end runs at most so many signings at once, and a permit is returned only
        //    when the blocking work really ends — a hung HSM or Fulcio fills its own bound and
        //    further requests get a quick 503, instead of piling up threads and sessions.
        let signed = async {
            let deadline = tokio::time::Instant::now() + SIGN_TIMEOUT;
            let permits = inner.backends.acquire(&signers, deadline).await?;
            let (signers, payload) = (signers.clone(), plan.payload.clone());
            let std_deadline = deadline.into_std();
            let job = tokio::task::spawn_blocking(move || {
                let _permits = permits;
                let refs: Vec<&dyn KeySigner> = signers.iter().map(|s| s.as_ref()).collect();
                crate::keyless::within_deadline(std_deadline, || {
                    Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload, &refs)
                })
                .map_err(Error::from)
                .and_then(|(envelope, ops)| {
                    pipeline::bundles(&envelope, &ops).map(|b| (envelope, ops, b))
                })
            });
            match tokio::time::timeout_at(deadline, job).await {
                Ok(Ok(result)) => result,
                Ok(Err(join)) => Err(Error::Unavailable(format!(
                    "the key back-end failed: {join}"
                ))),
                Err(_) => Err(Error::Unavailable(format!(
                    "the key back-end did not answer within {SIGN_TIMEOUT:?}"
                ))),
            }
        }
        .await;
        let (envelope, ops, bundles) = match signed {
            Ok(parts) => parts,
            Err(e) => {
                guard.reservation_id = None;
                let failed = Command::Finish(stella_state::command::Finish {
                    reservation_id,
                    identity: identity_key.clone(),
                    audit: draft(
                        Decision::Failed,
                        e.to_string(),
                        Made {
                            key_id: &primary.key_id,
                            key_source,
                            certificate_serial: None,
                            bundle_sha256: None,
                            signatures: Vec::new(),
                        },
                    ),
                    signed: None,
                    now_ms: self.now_ms(),
                });
                self.propose(failed).await?;
                return Err(match e {
                    Error::Unavailable(_) => e,
                    other => Error::Unavailable(other.to_string()),
                });
            }
        };

        // 3. Audit + commit the reservation in one Raft entry, before anything is returned.
        //    Every signature is on the record, filed under its bundle hash.
        // A standby's signature made because the active key's back-end failed is on the
        // record with key source `fallback` (and the remark naming both keys in the reason).
        let sources: Vec<String> = signers
            .iter()
            .zip(&ops)
            .map(|(s, op)| {
                if op
                    .remarks
                    .iter()
                    .any(|r| r.starts_with(crate::keys::FALLBACK_REMARK))
                {
                    "fallback".to_owned()
                } else {
                    s.descriptor().source.as_str().to_owned()
                }
            })
            .collect();
        let key_source = sources.first().map_or(key_source, String::as_str);
        let hashes = pipeline::signature_hashes(&envelope, &bundles)?;
        let signature_records = pipeline::signature_records(&ops, &sources, &hashes);
        let bundle_sha256 = bundles
            .first()
            .map(|b| b.sha256.clone())
            .or_else(|| hashes.first().cloned());
        // What the back-ends want on the record (threshold holders left out, and why).
        let remarks: Vec<&str> = ops
            .iter()
            .flat_map(|op| op.remarks.iter().map(String::as_str))
            .collect();
        let reason = if remarks.is_empty() {
            "signed".to_owned()
        } else {
            format!("signed; {}", remarks.join("; "))
        };
        let commit = Command::Finish(stella_state::command::Finish {
            reservation_id,
            identity: identity_key,
            audit: draft(
                Decision::Signed,
                reason,
                Made {
                    key_id: ops.first().map_or(&primary.key_id, |op| &op.key_id),
                    key_source,
                    certificate_serial: ops
                        .iter()
                        .find_map(|op| op.certificate_chain_der.first())
                        .and_then(|leaf| crate::keyless::certificate_serial(leaf)),
                    bundle_sha256: bundle_sha256.clone(),
                    signatures: signature_records,
                },
            ),
            signed: Some(stella_state::command::SignedOutcome {
                audit_id: String::new(),
                request_id: request_id.to_owned(),
                remaining,
                window_resets_at_ms,
                key_source: key_source.to_owned(),
                signatures: pipeline::stored_signatures(&ops),
            }),
            now_ms: self.now_ms(),
        });
        let audit_id = match self.propose(commit).await? {
            Response::Audited { audit_id, .. } => audit_id,
            Response::Superseded => {
                // Another attempt holds the request now (this one outlived its reservation):
                // its outcome is the one a retry gets; this signature is never handed out.
                return Err(Error::Unavailable(
                    "this attempt was superseded by a newer one; retry with the same proof or Idempotency-Key".into(),
                ));
            }
            other => {
                return Err(Error::Unavailable(format!(
                    "unexpected audit answer: {other:?}"
                )));
            }
        };
        guard.reservation_id = None;

        for op in &ops {
            metrics::counter!(crate::telemetry::KEY_USAGE, "key_id" => op.key_id.clone())
                .increment(1);
        }
        tracing::info!(
            target: "stella::sign",
            tenant = %caller.tenant,
            plan = %job.plan,
            poe_state = %job.poe_state,
            subject_digest = %plan.subject_digests.first().map(String::as_str).unwrap_or(""),
            subjects = plan.subject_digests.len(),
            predicate_type = %plan.predicate_type,
            key_id = %primary.key_id,
            decision = "signed",
            audit_id = %audit_id,
            bundle_sha256 = %bundle_sha256.as_deref().unwrap_or(""),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "signing decision"
        );
        let mut response = pipeline::response(
            &plan, &envelope, &ops, bundles, &sources, audit_id, request_id,
        )?;
        response.quota = Some(quota_status(remaining, window_resets_at_ms));
        Ok(response)
    }

    /// The key source of each signature of a concluded request, from its audit record (records
    /// before per-signature entries name only the first: `fallback` for all).
    fn recorded_sources(&self, audit_id: &str, fallback: &str, count: usize) -> Vec<String> {
        let recorded = crate::transparency::parse_audit_id(audit_id)
            .ok()
            .and_then(|seq| self.inner.cluster.view().audit_record(seq).ok().flatten())
            .map(|r| r.draft.signatures)
            .unwrap_or_default();
        (0..count)
            .map(|i| {
                recorded
                    .get(i)
                    .map_or_else(|| fallback.to_owned(), |s| s.key_source.clone())
            })
            .collect()
    }

    async fn propose(&self, command: Command) -> Result<Response, Error> {
        self.inner
            .ledger
            .propose(command)
            .await
            .map_err(|e| match e {
                ProposeError::NotLeader(_) => Error::NotLeader,
                ProposeError::Overloaded => Error::Overloaded,
                ProposeError::Unavailable(m) => Error::Unavailable(m),
            })
    }

    pub fn now_rfc3339(&self) -> String {
        self.inner.clock.now_rfc3339()
    }

    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }
}

/// State answers that mean a configuration command changed nothing.
pub fn rfc3339_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}
