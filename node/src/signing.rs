//! The signing service: plan → sign → audit (durable) → respond.
//!
//! A signature leaves the node only after its audit record is fsynced. If signing fails, the
//! failure is audited and the caller gets `signing_unavailable`.

use std::sync::Arc;
use std::time::Instant;

use stella_api::{SignDsseRequest, SignDsseResponse};
use stella_signer::{Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner};
use stella_state::Decision;

use crate::Error;
use crate::audit_log::AuditLog;
use crate::auth::Caller;
use crate::clock::Clock;
use crate::keys::Keyring;
use crate::pipeline::{self, Outcome};

#[derive(Clone)]
pub struct SigningService {
    keyring: Keyring,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
}

impl SigningService {
    pub fn new(keyring: Keyring, audit: AuditLog, clock: Arc<dyn Clock>) -> SigningService {
        SigningService {
            keyring,
            audit,
            clock,
        }
    }

    pub fn audit_healthy(&self) -> bool {
        self.audit.is_healthy()
    }

    pub async fn sign(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let result = self.sign_inner(caller, request_id, request).await;
        if let Err(e) = &result {
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
        result
    }

    async fn sign_inner(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let plan = pipeline::plan(request)?;
        let signers = self.keyring.signers_for(&caller.tenant);
        let refs: Vec<&dyn KeySigner> = signers.iter().map(|s| s.as_ref()).collect();
        let primary = signers
            .first()
            .map(|s| s.descriptor().clone())
            .ok_or_else(|| Error::Unavailable("no key for tenant".into()))?;
        let key_source = primary.source.as_str();

        let draft = |decision: Decision, reason: String, bundle_sha256: Option<String>| {
            pipeline::audit_draft(Outcome {
                time: self.clock.now_rfc3339(),
                request_id,
                caller,
                plan: &plan,
                key_id: &primary.key_id,
                key_source,
                decision,
                reason,
                bundle_sha256,
            })
        };
        let signed = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, plan.payload.clone(), &refs)
            .map_err(Error::from)
            .and_then(|(envelope, ops)| {
                pipeline::bundles(&envelope, &ops).map(|b| (envelope, ops, b))
            });
        let (envelope, ops, bundles) = match signed {
            Ok(parts) => parts,
            Err(e) => {
                self.audit
                    .append(draft(Decision::Failed, e.to_string(), None))
                    .await?;
                return Err(Error::Unavailable(e.to_string()));
            }
        };
        let bundle_sha256 = bundles.first().map(|(_, h)| h.clone());
        let record = self
            .audit
            .append(draft(
                Decision::Signed,
                "signed".into(),
                bundle_sha256.clone(),
            ))
            .await?;
        for op in &ops {
            metrics::counter!("stella_signer_key_usage_total", "key_id" => op.key_id.clone())
                .increment(1);
        }
        tracing::info!(
            target: "stella::sign",
            tenant = %caller.tenant,
            subject_digest = %plan.subject_digests.first().map(String::as_str).unwrap_or(""),
            subjects = plan.subject_digests.len(),
            predicate_type = %plan.predicate_type,
            key_id = %primary.key_id,
            decision = "signed",
            audit_id = %record.audit_id,
            bundle_sha256 = %bundle_sha256.as_deref().unwrap_or(""),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "signing decision"
        );
        pipeline::response(
            &plan,
            &envelope,
            &ops,
            bundles,
            key_source,
            record.audit_id,
            request_id,
        )
    }
}
