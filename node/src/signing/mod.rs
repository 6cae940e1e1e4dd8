//! The signing service: admit on the receiving node, then sign on the leader.
//!
//! Every node accepts requests. The receiving node authenticates the caller (OpTok + DPoP or
//! mTLS) and establishes the entitlement (PoE, plan), then forwards the admitted job to the
//! leader through the one leader router (`router::at_leader`, re-routing when leadership
//! moves); only the leader signs, so quota, proof-replay and audit decisions are made where Raft
//! linearizes them. The leader's side is in [`leader`]: a pre-check against its own applied
//! state, the signature, then ONE Raft entry that claims the proof, spends the quota unit and
//! appends the audit record — re-checked by `apply` (ADR 0028). Every refusal is audited too.
//! Configuration changes through the leader are in [`configure`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stella_api::{SignDsseRequest, SignDsseResponse};
use stella_cluster::ClusterHandle;
use stella_state::command::{ProofClaim, Response};
use stella_state::{AuditDraft, Command};

use crate::Error;
use crate::admission::provenance::{self, Provenance};
use crate::admission::{
    Admission, Authenticated, BYPASS_TOGGLE, Caller, RequestFacts, optok::SCOPE_SIGN,
};
use crate::clock::Clock;
use crate::config::QuotaConfig;
use crate::keys::Keyring;
use crate::ledger::{Ledger, ProposeError};
use crate::pipeline::{self, POE_UNCHECKED, Refusal};
use crate::session::Sessions;

pub mod configure;
mod leader;
pub use configure::{ConfigApplied, PEER_CONFIGURE};

pub use crate::attempts::{InFlight, LiveAttempts};
pub use crate::backends::{Backends, MAX_SIGNINGS_PER_BACKEND};
pub use crate::clock::rfc3339_ms;
pub use crate::router::ForwardAnswer;

pub const PEER_SIGN: &str = "/peer/v1/sign";
pub const PEER_AUDIT: &str = "/peer/v1/audit";

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
    /// The signings under way on this node (as leader), per tenant and plan.
    pub in_flight: InFlight,
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

    /// The leader's side of auditing a refusal.
    pub async fn audit_as_leader(&self, draft: AuditDraft) -> Result<String, Error> {
        match self.propose(Command::Audit(draft)).await? {
            Response::Audited { audit_id, .. } => Ok(audit_id),
            other => Err(Error::Unavailable(format!(
                "unexpected audit answer: {other:?}"
            ))),
        }
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

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}
