//! How a leader's signing attempt ends: its audit record, the client's answer, and the errors
//! for a refused, replayed, in-progress or failed attempt.

use stella_api::{QuotaStatus, SignDsseResponse};
use stella_state::command::{Outcome, ThrottleReason};
use stella_state::{AuditDraft, Command, Decision};

use super::{Attempt, Made};
use crate::Error;
use crate::pipeline::{self, Refusal};
use crate::signing::{SignJob, SigningService, rfc3339_ms};

impl SigningService {
    /// The audit draft of this attempt's outcome.
    pub(super) fn outcome_draft(
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

    pub(super) fn failure_draft(&self, attempt: &Attempt<'_>, e: &Error) -> AuditDraft {
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
    pub(super) async fn failed(&self, attempt: &Attempt<'_>, e: Error) -> Error {
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
    pub(super) fn answer(
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
    pub(super) fn concluded(
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
    pub(super) fn recorded_sources(
        &self,
        audit_id: &str,
        fallback: &str,
        count: usize,
    ) -> Vec<String> {
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
    pub(super) async fn in_progress(&self, reservation_id: String) -> Error {
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

    pub(super) async fn replayed(&self, job: &SignJob) -> Error {
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
    pub(super) async fn refused_on_leader(&self, job: &SignJob, e: Error) -> Error {
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
pub(super) const CONCURRENCY_RETRY_MS: u64 = stella_state::machine::CONCURRENCY_RETRY_MS;

pub(super) fn throttled(plan: &str, reason: ThrottleReason, retry_after_ms: u64) -> Error {
    Error::Throttled {
        retry_after_seconds: retry_after_ms.div_ceil(1000).max(1),
        reason: format!("plan `{plan}`: {reason:?}"),
    }
}

pub(super) fn unavailable(e: Error) -> Error {
    match e {
        Error::Unavailable(_) => e,
        other => Error::Unavailable(other.to_string()),
    }
}

pub(super) fn quota_status(
    attempt: &Attempt<'_>,
    remaining: u64,
    window_resets_at_ms: u64,
) -> QuotaStatus {
    QuotaStatus {
        plan: attempt.job.plan.clone(),
        limit: attempt.limits.signatures_per_window,
        remaining,
        window_resets_at: rfc3339_ms(window_resets_at_ms),
        poe_state: attempt.job.poe_state.clone(),
    }
}
