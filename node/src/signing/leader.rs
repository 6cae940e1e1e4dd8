//! The leader's side of a signing (ADR 0028): choose the keys, pre-check against the leader's
//! own applied state, sign, then commit the signing in ONE Raft entry (`Command::Sign`) that
//! claims the proof, spends the unit and appends the audit record — `apply` decides again, and
//! a signing that loses a race is refused and its signature never handed out.
//!
//! A threshold key is the one exception: its share holders re-check the caller's evidence in
//! the replicated state before they release a share, so the evidence must be committed before
//! the signing — those signings keep two rounds (`AdmitOnce`, then `Finish`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stella_api::SignDsseResponse;
use stella_signer::{Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner, SignedOperation};
use stella_state::command::{
    Admit, AdmitOnce, Identity, QuotaUse, Reserve, Response, SignOnce, ThrottleReason,
};
use stella_state::{AuditDraft, Command, Decision};

use super::{SignJob, SigningService};
use crate::Error;
use crate::admission::Caller;
use crate::attempts::ReservationGuard;
use crate::config::PlanConfig;
use crate::pipeline::{self, MadeBundle, Precheck, SigningPlan};

mod outcome;

use outcome::{CONCURRENCY_RETRY_MS, throttled, unavailable};

/// How long one signing operation may take (an HSM that hangs gets 503, not a stuck request).
const SIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one request is, on the leader: the job, its plan and limits, and its keys.
struct Attempt<'a> {
    job: &'a SignJob,
    caller: Caller,
    limits: PlanConfig,
    plan: SigningPlan,
    signers: Vec<Arc<dyn KeySigner>>,
    identity: Option<Identity>,
    /// The attempt's id: a two-round attempt's reservation, and what threshold holders are
    /// told the share is for.
    reservation_id: String,
    started: Instant,
}

/// A signature made and what the audit record says about it.
struct Made {
    envelope: Envelope,
    ops: Vec<SignedOperation>,
    bundles: Vec<MadeBundle>,
    /// The key source of each signature (`fallback` for a standby's).
    sources: Vec<String>,
    draft: AuditDraft,
    bundle_sha256: Option<String>,
}

impl SigningService {
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
        let service = self.clone();
        let mut response = self
            .inner
            .sessions
            .run(async move { service.leader_pipeline(job).await })
            .await?;
        // The record is applied here (its entry answered), so its leaf is known.
        response.log_entry =
            crate::transparency::log_entry(cluster.view(), &response.audit_id).ok();
        Ok(response)
    }

    /// Keys → pre-check → sign → one entry → respond (what a session runs).
    async fn leader_pipeline(&self, job: SignJob) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let caller = job.caller();
        let limits = match self.inner.admission.plan(&job.plan) {
            Ok(limits) => limits,
            Err(e) => return Err(self.refused_on_leader(&job, e).await),
        };
        let plan = pipeline::plan(job.request.clone())?;
        let reservation_id = format!("{}/{}", job.request_id, super::random_suffix());
        let signers = match self
            .choose_signers(&job, &limits, &plan, &reservation_id)
            .await
        {
            Ok(signers) => signers,
            Err(e) => return Err(self.refused_on_leader(&job, e).await),
        };
        let identity = pipeline::identity(pipeline::IdentityFacts {
            proof: job.proof.as_ref(),
            idempotency_key: job.idempotency_key.as_deref(),
            authorization: &job.credentials.authorization,
            tenant: &caller.tenant,
            subject: &caller.subject,
            client_cert_sha256: job.credentials.client_cert_sha256.as_deref(),
            request: &job.request,
            now_ms: self.now_ms(),
            window_ms: self.inner.admission.idempotency_window_ms(),
        })?;
        let attempt = Attempt {
            job: &job,
            caller,
            limits,
            plan,
            signers,
            identity,
            reservation_id,
            started,
        };
        // The plan's concurrent signings are counted here, by the leader alone.
        let Some(mut slot) = self.inner.in_flight.enter(
            &attempt.caller.tenant,
            &job.plan,
            attempt.limits.max_concurrent,
        ) else {
            let e = throttled(&job.plan, ThrottleReason::Concurrency, CONCURRENCY_RETRY_MS);
            return Err(self.refused_on_leader(&job, e).await);
        };
        let threshold = attempt
            .signers
            .iter()
            .any(|s| s.descriptor().source == stella_signer::KeySource::Threshold);
        if threshold {
            return self.two_rounds(attempt).await;
        }
        let now_ms = self.now_ms();
        let decision = slot.decide(|promised| {
            self.inner.cluster.view().with_state(|state| {
                pipeline::precheck(
                    state,
                    &pipeline::PrecheckFacts {
                        proof: job.proof.as_ref().filter(|_| attempt.identity.is_none()),
                        identity: attempt.identity.as_ref(),
                        tenant: &attempt.caller.tenant,
                        plan: &job.plan,
                        limit: attempt.limits.signatures_per_window,
                        window_ms: attempt.limits.window_seconds.saturating_mul(1000),
                        now_ms,
                        promised,
                    },
                )
            })
        });
        match decision {
            Precheck::Proceed => {}
            Precheck::Concluded(outcome) => return self.concluded(&attempt, outcome),
            Precheck::Replayed => return Err(self.replayed(&job).await),
            Precheck::InProgress { reservation_id } => {
                return Err(self.in_progress(reservation_id).await);
            }
            // The leader's view may be stale (a new leader that has not applied its
            // predecessor's entries yet) or count a unit promised to this very request's
            // earlier attempt: a refusal is decided in log order instead, by the two-round
            // path — the identity's outcome if there is one, a unit if one is left, else the
            // refusal, recorded as the identity's outcome.
            Precheck::Throttled { .. } => {
                return self.two_rounds(attempt).await;
            }
        }
        let made = match self.sign_now(&attempt).await {
            Ok(made) => made,
            Err(e) => return Err(self.failed(&attempt, e).await),
        };
        let commit = Command::Sign(Box::new(SignOnce {
            // The identity carries the proof (bound to token and request).
            proof: job.proof.clone().filter(|_| attempt.identity.is_none()),
            identity: attempt.identity.clone(),
            quota: QuotaUse {
                tenant: attempt.caller.tenant.clone(),
                plan: job.plan.clone(),
                limit: attempt.limits.signatures_per_window,
                window_ms: attempt.limits.window_seconds.saturating_mul(1000),
                now_ms: self.now_ms(),
            },
            audit: made.draft.clone(),
            signed: stella_state::command::SignedOutcome {
                audit_id: String::new(),
                request_id: job.request_id.clone(),
                remaining: 0,
                window_resets_at_ms: 0,
                key_source: made.sources.first().cloned().unwrap_or_default(),
                signatures: pipeline::stored_signatures(&made.ops),
            },
        }));
        match self.propose(commit).await? {
            Response::Granted {
                audit_id,
                remaining,
                window_resets_at_ms,
            } => self.answer(&attempt, made, audit_id, remaining, window_resets_at_ms),
            // Lost a race with another attempt of the same request: its outcome is the answer,
            // this signature is discarded.
            Response::Concluded(outcome) => self.concluded(&attempt, *outcome),
            Response::InProgress { reservation_id } => Err(self.in_progress(reservation_id).await),
            Response::Replayed => Err(self.replayed(&job).await),
            Response::Throttled {
                reason,
                retry_after_ms,
            } => {
                // Lost the plan's last unit to a signing this leader had not applied yet (one
                // of an earlier leader's): refused, the signature discarded.
                metrics::counter!(crate::telemetry::SPECULATIVE_DISCARDS).increment(1);
                let e = throttled(&job.plan, reason, retry_after_ms);
                Err(self.refused_on_leader(&job, e).await)
            }
            other => Err(Error::Unavailable(format!(
                "unexpected signing answer: {other:?}"
            ))),
        }
    }

    /// Two entries: a reservation decided in log order (`AdmitOnce`) before the signing, then
    /// the record with the commit (`Finish`). For a threshold key's signing (the caller's
    /// evidence is committed with the reservation, before the holders are asked), and for a
    /// request the leader's pre-check would refuse for quota.
    async fn two_rounds(&self, attempt: Attempt<'_>) -> Result<SignDsseResponse, Error> {
        let job = attempt.job;
        let reservation_id = attempt.reservation_id.clone();
        let threshold_keys: Vec<String> = attempt
            .signers
            .iter()
            .map(|s| s.descriptor())
            .filter(|d| d.source == stella_signer::KeySource::Threshold)
            .map(|d| d.key_id.clone())
            .collect();
        // From before the admission on: a retry meeting this attempt's reservation can tell
        // it still runs.
        let _running = self.inner.live.enter(&reservation_id);
        let admit = Command::AdmitOnce(AdmitOnce {
            admit: Admit {
                proof: job.proof.clone().filter(|_| attempt.identity.is_none()),
                reserve: Reserve {
                    reservation_id: reservation_id.clone(),
                    tenant: attempt.caller.tenant.clone(),
                    plan: job.plan.clone(),
                    limit: attempt.limits.signatures_per_window,
                    window_ms: attempt.limits.window_seconds.saturating_mul(1000),
                    // The leader holds the concurrency limit (the slot taken above).
                    max_concurrent: u32::MAX,
                    now_ms: self.now_ms(),
                    ttl_ms: self
                        .inner
                        .quota
                        .reservation_ttl_seconds
                        .saturating_mul(1000),
                },
            },
            identity: attempt.identity.clone(),
            // The caller's evidence, for the share holders of threshold keys to re-check.
            evidence: (!threshold_keys.is_empty()).then(|| {
                stella_state::command::AdmissionEvidence {
                    tenant: attempt.caller.tenant.clone(),
                    plan: job.plan.clone(),
                    key_ids: threshold_keys,
                    statement_sha256: attempt.plan.statement_sha256.clone(),
                    authorization: job.credentials.authorization.clone(),
                    dpop: job.credentials.dpop.clone(),
                    client_cert_sha256: job.credentials.client_cert_sha256.clone(),
                    poe_state: job.poe_state.clone(),
                }
            }),
        });
        let (remaining, window_resets_at_ms) = match self.propose(admit).await? {
            Response::Reserved {
                remaining,
                window_resets_at_ms,
            } => (remaining, window_resets_at_ms),
            Response::Concluded(outcome) => return self.concluded(&attempt, *outcome),
            Response::InProgress { reservation_id } => {
                return Err(self.in_progress(reservation_id).await);
            }
            Response::Replayed => return Err(self.replayed(job).await),
            Response::Throttled {
                retry_after_ms,
                reason,
            } => {
                let e = throttled(&job.plan, reason, retry_after_ms);
                return Err(self.refused_on_leader(job, e).await);
            }
            other => {
                return Err(Error::Unavailable(format!(
                    "unexpected reservation answer: {other:?}"
                )));
            }
        };
        let mut guard = ReservationGuard {
            ledger: self.inner.ledger.clone(),
            reservation_id: Some(reservation_id.clone()),
            now_ms: self.now_ms(),
        };
        let made = match self.sign_now(&attempt).await {
            Ok(made) => made,
            Err(e) => {
                guard.reservation_id = None;
                let failed = Command::Finish(stella_state::command::Finish {
                    reservation_id,
                    identity: attempt.identity.as_ref().map(|i| i.key.clone()),
                    audit: self.failure_draft(&attempt, &e),
                    signed: None,
                    now_ms: self.now_ms(),
                });
                self.propose(failed).await?;
                return Err(unavailable(e));
            }
        };
        let commit = Command::Finish(stella_state::command::Finish {
            reservation_id,
            identity: attempt.identity.as_ref().map(|i| i.key.clone()),
            audit: made.draft.clone(),
            signed: Some(stella_state::command::SignedOutcome {
                audit_id: String::new(),
                request_id: job.request_id.clone(),
                remaining,
                window_resets_at_ms,
                key_source: made.sources.first().cloned().unwrap_or_default(),
                signatures: pipeline::stored_signatures(&made.ops),
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
        self.answer(&attempt, made, audit_id, remaining, window_resets_at_ms)
    }

    /// The keys that sign for the caller's tenant and plan, under the plan's key policy. The
    /// choice is made under the state lock; loading a key the first time (a file read, opening
    /// an HSM key) happens outside it, on the blocking pool.
    async fn choose_signers(
        &self,
        job: &SignJob,
        limits: &PlanConfig,
        plan: &SigningPlan,
        admission: &str,
    ) -> Result<Vec<Arc<dyn KeySigner>>, Error> {
        let inner = &self.inner;
        if plan.mode == pipeline::MODE_KEYLESS {
            crate::key_policy::check_keyless(limits)?;
            return Ok(vec![inner.keyring.keyless()?]);
        }
        let now_ms = self.now_ms();
        let (selection, standby) = inner.cluster.view().with_state(|state| {
            (
                crate::keys::select(state, &job.tenant, &job.plan),
                crate::key_policy::standby(state.keys.values(), &job.tenant, &job.plan).cloned(),
            )
        });
        // The plan's key policy, decided on the registry alone: hardware-backed keys only, no
        // key past its age and grace (ADR 0022).
        match &selection {
            crate::keys::Selection::Registered(entries) => {
                let keys: Vec<_> = entries.iter().map(|(k, _)| k).collect();
                crate::key_policy::check_signing(limits, &keys, now_ms)?;
            }
            crate::keys::Selection::Default => crate::key_policy::check_default_key(
                limits,
                inner.keyring.default_key().descriptor().source.as_str(),
            )?,
            crate::keys::Selection::NoActiveKey => {}
        }
        if plan.mode == pipeline::MODE_KEYFUL_KEYLESS {
            crate::key_policy::check_keyless(limits)?;
        }
        if selection == crate::keys::Selection::Default && !limits.shared_default_key {
            return Err(Error::EntitlementDenied(format!(
                "tenant `{}` has no key of its own on plan `{}`, and the plan does not use the shared default key",
                crate::error::clip(&job.tenant),
                crate::error::clip(&job.plan)
            )));
        }
        let (service, tenant, plan_name, admission) = (
            self.clone(),
            job.tenant.clone(),
            job.plan.clone(),
            admission.to_owned(),
        );
        let mut signers = tokio::task::spawn_blocking(move || {
            service.inner.keyring.signers_for(
                selection,
                standby.as_ref(),
                &tenant,
                &plan_name,
                &admission,
            )
        })
        .await
        .unwrap_or_else(|e| Err(Error::Unavailable(format!("loading the key: {e}"))))?;
        if plan.mode == pipeline::MODE_KEYFUL_KEYLESS {
            signers.push(inner.keyring.keyless()?);
        }
        if signers.is_empty() {
            return Err(Error::Unavailable("no key for tenant".into()));
        }
        Ok(signers)
    }

    /// Signs, off the async workers (an HSM call blocks) and bounded in time (a token that
    /// stops answering must not hold the request forever) and in work: each key back-end runs
    /// at most so many signings at once, and a permit is returned only when the blocking work
    /// really ends — a hung HSM or Fulcio fills its own bound and further requests get a quick
    /// 503, instead of piling up threads and sessions.
    async fn sign_now(&self, attempt: &Attempt<'_>) -> Result<Made, Error> {
        let deadline = tokio::time::Instant::now() + SIGN_TIMEOUT;
        let permits = self
            .inner
            .backends
            .acquire(&attempt.signers, deadline)
            .await?;
        let (signers, payload) = (attempt.signers.clone(), attempt.plan.payload.clone());
        let std_deadline = deadline.into_std();
        let job = tokio::task::spawn_blocking(move || {
            let _permits = permits;
            let refs: Vec<&dyn KeySigner> = signers.iter().map(|s| s.as_ref()).collect();
            crate::backends::within_deadline(std_deadline, || {
                Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload, &refs)
            })
            .map_err(Error::from)
            .and_then(|(envelope, ops)| {
                pipeline::bundles(&envelope, &ops).map(|b| (envelope, ops, b))
            })
        });
        let (envelope, ops, bundles) = match tokio::time::timeout_at(deadline, job).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => {
                return Err(Error::Unavailable(format!(
                    "the key back-end failed: {join}"
                )));
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "the key back-end did not answer within {SIGN_TIMEOUT:?}"
                )));
            }
        };
        // A standby's signature made because the active key's back-end failed is on the
        // record with key source `fallback` (and the remark naming both keys in the reason).
        let sources = pipeline::signature_sources(&attempt.signers, &ops);
        let hashes = pipeline::signature_hashes(&envelope, &bundles)?;
        let bundle_sha256 = bundles
            .first()
            .map(|b| b.sha256.clone())
            .or_else(|| hashes.first().cloned());
        let primary = attempt.signers[0].descriptor();
        let draft = self.outcome_draft(
            attempt,
            Decision::Signed,
            pipeline::signed_reason(&ops),
            pipeline::Made {
                key_id: ops.first().map_or(&primary.key_id, |op| &op.key_id),
                key_source: sources
                    .first()
                    .map_or(primary.source.as_str(), String::as_str),
                certificate_serial: ops
                    .iter()
                    .find_map(|op| op.certificate_chain_der.first())
                    .and_then(|leaf| crate::keyless::certificate_serial(leaf)),
                bundle_sha256: bundle_sha256.clone(),
                signatures: pipeline::signature_records(&ops, &sources, &hashes),
            },
        );
        Ok(Made {
            envelope,
            ops,
            bundles,
            sources,
            draft,
            bundle_sha256,
        })
    }
}
