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

use stella_api::{QuotaStatus, SignDsseResponse};
use stella_signer::{Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner, SignedOperation};
use stella_state::command::{
    Admit, AdmitOnce, Identity, Outcome, QuotaUse, Reserve, Response, SignOnce, ThrottleReason,
};
use stella_state::{AuditDraft, Command, Decision};

use super::{SignJob, SigningService, rfc3339_ms};
use crate::Error;
use crate::admission::Caller;
use crate::attempts::ReservationGuard;
use crate::config::PlanConfig;
use crate::pipeline::{self, MadeBundle, Precheck, Refusal, SigningPlan};

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

    /// The audit draft of this attempt's outcome.
    fn outcome_draft(
        &self,
        attempt: &Attempt<'_>,
        decision: Decision,
        reason: String,
        made: pipeline::Made<'_>,
    ) -> AuditDraft {
        pipeline::audit_draft(pipeline::Outcome {
            time: self.inner.clock.now_rfc3339(),
            request_id: &attempt.job.request_id,
            caller: &attempt.caller,
            plan: &attempt.plan,
            key_id: made.key_id,
            key_source: made.key_source,
            poe_state: &attempt.job.poe_state,
            plan_name: &attempt.job.plan,
            provenance: attempt.job.provenance.as_deref(),
            certificate_serial: made.certificate_serial,
            decision,
            reason,
            bundle_sha256: made.bundle_sha256,
            signatures: made.signatures,
        })
    }

    fn failure_draft(&self, attempt: &Attempt<'_>, e: &Error) -> AuditDraft {
        let primary = attempt.signers[0].descriptor();
        self.outcome_draft(
            attempt,
            Decision::Failed,
            e.to_string(),
            pipeline::Made {
                key_id: &primary.key_id,
                key_source: primary.source.as_str(),
                certificate_serial: None,
                bundle_sha256: None,
                signatures: Vec::new(),
            },
        )
    }

    /// A signing that failed before anything was spent: audited, answered 503.
    async fn failed(&self, attempt: &Attempt<'_>, e: Error) -> Error {
        if let Err(audit) = self
            .propose(Command::Audit(self.failure_draft(attempt, &e)))
            .await
        {
            metrics::counter!("stella_signer_refusal_audit_failures_total").increment(1);
            tracing::error!(error = %audit, "a failed signing could not be audited");
        }
        unavailable(e)
    }

    /// The answer to a signing committed with `audit_id`.
    fn answer(
        &self,
        attempt: &Attempt<'_>,
        made: Made,
        audit_id: String,
        remaining: u64,
        window_resets_at_ms: u64,
    ) -> Result<SignDsseResponse, Error> {
        let job = attempt.job;
        for op in &made.ops {
            metrics::counter!(crate::telemetry::KEY_USAGE, "key_id" => op.key_id.clone())
                .increment(1);
        }
        tracing::info!(
            target: "stella::sign",
            tenant = %attempt.caller.tenant,
            plan = %job.plan,
            poe_state = %job.poe_state,
            subject_digest = %attempt.plan.subject_digests.first().map(String::as_str).unwrap_or(""),
            subjects = attempt.plan.subject_digests.len(),
            predicate_type = %attempt.plan.predicate_type,
            key_id = %attempt.signers[0].descriptor().key_id,
            decision = "signed",
            audit_id = %audit_id,
            bundle_sha256 = %made.bundle_sha256.as_deref().unwrap_or(""),
            latency_ms = attempt.started.elapsed().as_secs_f64() * 1000.0,
            "signing decision"
        );
        let mut response = pipeline::response(
            &attempt.plan,
            &made.envelope,
            &made.ops,
            made.bundles,
            &made.sources,
            audit_id,
            &job.request_id,
        )?;
        response.quota = Some(quota_status(attempt, remaining, window_resets_at_ms));
        Ok(response)
    }

    /// Asked before (a retry, a re-forward after a failover, or a race this attempt lost):
    /// the committed outcome, not a new decision.
    fn concluded(
        &self,
        attempt: &Attempt<'_>,
        outcome: Outcome,
    ) -> Result<SignDsseResponse, Error> {
        metrics::counter!(crate::telemetry::IDEMPOTENT_REPLIES).increment(1);
        match outcome {
            Outcome::Signed(signed) => {
                let (envelope, ops) = pipeline::rebuilt(&attempt.plan, &signed.signatures)?;
                let bundles = pipeline::bundles(&envelope, &ops)?;
                let sources =
                    self.recorded_sources(&signed.audit_id, &signed.key_source, ops.len());
                let mut response = pipeline::response(
                    &attempt.plan,
                    &envelope,
                    &ops,
                    bundles,
                    &sources,
                    signed.audit_id.clone(),
                    &signed.request_id,
                )?;
                response.quota = Some(quota_status(
                    attempt,
                    signed.remaining,
                    signed.window_resets_at_ms,
                ));
                Ok(response)
            }
            Outcome::Throttled { reason, until_ms } => Err(throttled(
                &attempt.job.plan,
                reason,
                until_ms.saturating_sub(self.now_ms()),
            )),
        }
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

    /// A two-round attempt of this term holds the request. If its session no longer runs here
    /// (it failed and its release did not commit), release it now: the caller's retry then
    /// takes the identity over.
    async fn in_progress(&self, reservation_id: String) -> Error {
        if !self.inner.live.contains(&reservation_id) {
            let _ = self
                .propose(Command::Release {
                    reservation_id,
                    now_ms: self.now_ms(),
                })
                .await;
        }
        Error::Unavailable(
            "this request is being signed by an earlier attempt; retry shortly with the same proof or Idempotency-Key".into(),
        )
    }

    async fn replayed(&self, job: &SignJob) -> Error {
        let e = if job.proof.is_none() {
            Error::IdempotencyConflict(
                "this Idempotency-Key was used for a different request".into(),
            )
        } else {
            Error::Unauthenticated(
                "DPoP proof replayed (its jti was already used in this cluster, for another request or token)".into(),
            )
        };
        self.refused_on_leader(job, e).await
    }

    /// Audits a refusal decided on the leader (directly: this node leads) and returns it.
    async fn refused_on_leader(&self, job: &SignJob, e: Error) -> Error {
        if let Error::Throttled { .. } = &e {
            metrics::counter!(crate::telemetry::QUOTA_HITS, "plan" => job.plan.clone())
                .increment(1);
        }
        let caller = job.caller();
        let refusal = Refusal {
            time: self.inner.clock.now_rfc3339(),
            request_id: &job.request_id,
            caller: Some(&caller),
            request: Some(&job.request),
            poe_state: &job.poe_state,
            plan_name: Some(&job.plan),
            error: &e,
        };
        let _ = self.audit_as_leader(pipeline::refusal_draft(refusal)).await;
        e
    }
}

/// Hint given to a caller throttled by concurrency (a slot frees when a signing ends).
const CONCURRENCY_RETRY_MS: u64 = stella_state::machine::CONCURRENCY_RETRY_MS;

fn throttled(plan: &str, reason: ThrottleReason, retry_after_ms: u64) -> Error {
    Error::Throttled {
        retry_after_seconds: retry_after_ms.div_ceil(1000).max(1),
        reason: format!("plan `{plan}`: {reason:?}"),
    }
}

fn unavailable(e: Error) -> Error {
    match e {
        Error::Unavailable(_) => e,
        other => Error::Unavailable(other.to_string()),
    }
}

fn quota_status(attempt: &Attempt<'_>, remaining: u64, window_resets_at_ms: u64) -> QuotaStatus {
    QuotaStatus {
        plan: attempt.job.plan.clone(),
        limit: attempt.limits.signatures_per_window,
        remaining,
        window_resets_at: rfc3339_ms(window_resets_at_ms),
        poe_state: attempt.job.poe_state.clone(),
    }
}
