//! The holder's own decision before it releases a signature share (ADR 0011, issue 13).
//!
//! `t` shares must mean `t` independent decisions. A coordinator (the leader) asks a holder to
//! commit and sign for an *admission*: the reservation id of a Raft-committed
//! `AdmitWithEvidence` entry. The holder reads that entry from its own applied state and decides
//! for itself, trusting nothing the coordinator says:
//!
//! - the caller's credentials, exactly as presented, verify again here: the OpTok against this
//!   node's JWKS, its sender binding (the DPoP proof over `POST` to the signing path on a URL of
//!   the cluster, or the client certificate thumbprint), scope `signer.sign`, for the admitted
//!   tenant; and the proof is the one the cluster claimed (single use);
//! - the key is one this node's own registry selects for that tenant and plan, and the admission
//!   names it; the entitlement decision recorded in the entry admitted the request;
//! - the message is the PAE of exactly the admitted statement: the PAE the coordinator presents
//!   encodes an in-toto payload whose SHA-256 is the committed one, and the signing package asks
//!   for the SHA-256 of that PAE.
//!
//! A coordinator routing around a faulty holder runs a second session for the same admission;
//! that yields another signature over the same admitted message, nothing more, so holders do
//! not limit sessions per admission (the admission itself closes when its reservation does).
//!
//! [`decide`] is the pure part; [`AdmissionGate`] gathers its inputs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use stella_cluster::ClusterHandle;
use stella_signer::threshold::SuiteId;
use stella_signer::{IN_TOTO_PAYLOAD_TYPE, parse_pae};
use stella_state::command::AdmissionEvidence;

use super::{CommitRequest, SignShareRequest};
use crate::admission::optok::SCOPE_SIGN;
use crate::admission::{Admission, POE_BYPASSED, POE_STALE, POE_VALID, RequestFacts};

/// How long a holder waits to apply an admission its coordinator has committed.
const APPLY_WAIT: Duration = Duration::from_millis(1500);

pub type GateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What a holder checks before it commits nonces or releases a share.
pub trait ShareGate: Send + Sync {
    fn commit<'a>(&'a self, request: &'a CommitRequest) -> GateFuture<'a>;
    fn share<'a>(&'a self, request: &'a SignShareRequest) -> GateFuture<'a>;
}

/// The pure decision: may this holder sign `package_message` (of a `suite` signing package)
/// with `key_id` for `evidence`, given the coordinator's `pae` and the threshold keys its own
/// registry selects for the admitted tenant and plan?
pub fn decide(
    evidence: &AdmissionEvidence,
    key_id: &str,
    pae: &[u8],
    suite: SuiteId,
    package_message: &[u8],
    registry_keys: &[String],
) -> Result<(), String> {
    if !evidence.key_ids.iter().any(|k| k == key_id) {
        return Err(format!("the admission is not for key {key_id}"));
    }
    if !registry_keys.iter().any(|k| k == key_id) {
        return Err(format!(
            "this holder's registry does not select {key_id} for {}/{}",
            evidence.tenant, evidence.plan
        ));
    }
    if ![POE_VALID, POE_STALE, POE_BYPASSED].contains(&evidence.poe_state.as_str()) {
        return Err("the admission's entitlement decision admitted nothing".into());
    }
    let Some((payload_type, payload)) = parse_pae(pae) else {
        return Err("the coordinator's PAE is malformed".into());
    };
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err("the PAE is not of an in-toto statement".into());
    }
    if hex::encode(stella_signer::digest::sha256(payload)) != evidence.statement_sha256 {
        return Err("the PAE is not of the admitted statement".into());
    }
    if package_message != suite.message(pae) {
        return Err("the signing package is not for the PAE of the admitted statement".into());
    }
    Ok(())
}

/// The real holder's gate: this node's applied state, its admission (JWKS, DPoP rules) and the
/// URLs clients may sign at.
pub struct AdmissionGate {
    pub cluster: ClusterHandle,
    pub admission: Arc<Admission>,
    /// Base URLs of this node and the load balancer (members' API URLs are added from the
    /// membership at check time).
    pub base_urls: Vec<String>,
}

impl AdmissionGate {
    pub fn new(
        cluster: ClusterHandle,
        admission: Arc<Admission>,
        base_urls: Vec<String>,
    ) -> AdmissionGate {
        AdmissionGate {
            cluster,
            admission,
            base_urls,
        }
    }

    /// The admission's evidence, once this node has applied it.
    async fn evidence(&self, admission: &str) -> Result<AdmissionEvidence, String> {
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            let found = self
                .cluster
                .view()
                .with_state(|s| s.admissions.get(admission).cloned());
            if let Some(evidence) = found {
                return Ok(evidence);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no open admission `{}` in this holder's state",
                    crate::error::clip(admission)
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every URL a client may have signed at: this node's, the load balancer's, each member's.
    fn sign_urls(&self) -> Vec<String> {
        let mut bases = self.base_urls.clone();
        bases.extend(
            self.cluster
                .status()
                .nodes
                .values()
                .map(|addr| addr.api_url.clone()),
        );
        bases.sort();
        bases.dedup();
        bases
            .iter()
            .map(|b| format!("{}{}", b.trim_end_matches('/'), stella_api::SIGN_DSSE_PATH))
            .collect()
    }

    /// The caller's credentials verify again on this node, for the admitted tenant, and the
    /// proof is the one the cluster claimed.
    async fn reverify(&self, evidence: &AdmissionEvidence) -> Result<(), String> {
        let facts = RequestFacts {
            method: "POST".into(),
            urls: self.sign_urls(),
            authorization: vec![evidence.authorization.clone()],
            dpop: evidence.dpop.iter().cloned().collect(),
            idempotency_key: Vec::new(),
            client_cert_sha256: evidence.client_cert_sha256.clone(),
            source: None,
        };
        let authn = self
            .admission
            .verify_credentials(&facts, &[SCOPE_SIGN])
            .await
            .map_err(|e| format!("the caller's credentials do not verify here: {e}"))?;
        if authn.caller.tenant != evidence.tenant {
            return Err("the credentials are another tenant's".into());
        }
        if let Some(proof) = &authn.proof {
            let claimed = self
                .cluster
                .view()
                .with_state(|s| s.proofs.contains(&proof.replay_key()));
            if !claimed {
                return Err("the caller's proof was not claimed by the cluster".into());
            }
        }
        Ok(())
    }

    async fn check_share(&self, request: &SignShareRequest) -> Result<(), String> {
        let evidence = self.evidence(&request.admission).await?;
        let (suite, message) =
            stella_signer::threshold::signing_package_message(&request.signing_package)
                .map_err(|e| e.to_string())?;
        let registry_keys = self.cluster.view().with_state(|s| {
            match crate::key_registry::select(s, &evidence.tenant, &evidence.plan) {
                crate::key_registry::Selection::Registered(keys) => keys
                    .into_iter()
                    .filter(|(_, group)| group.is_some())
                    .map(|(k, _)| k.key_id)
                    .collect(),
                _ => Vec::new(),
            }
        });
        decide(
            &evidence,
            &request.key_id,
            &request.pae,
            suite,
            &message,
            &registry_keys,
        )?;
        self.reverify(&evidence).await
    }
}

impl ShareGate for AdmissionGate {
    /// Nonces only for an open admission of this key (no coordinator fills a holder's nonce
    /// table for nothing).
    fn commit<'a>(&'a self, request: &'a CommitRequest) -> GateFuture<'a> {
        Box::pin(async move {
            let evidence = self.evidence(&request.admission).await?;
            if evidence.key_ids.contains(&request.key_id) {
                Ok(())
            } else {
                Err(format!("the admission is not for key {}", request.key_id))
            }
        })
    }

    fn share<'a>(&'a self, request: &'a SignShareRequest) -> GateFuture<'a> {
        Box::pin(async move {
            let verdict = self.check_share(request).await;
            if let Err(reason) = &verdict {
                tracing::warn!(key_id = %request.key_id, admission = %crate::error::clip(&request.admission), %reason, "refused to release a signature share");
            }
            verdict
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(statement: &[u8]) -> AdmissionEvidence {
        AdmissionEvidence {
            tenant: "tenant-a".into(),
            plan: "pro".into(),
            key_ids: vec!["sha256:k".into()],
            statement_sha256: hex::encode(stella_signer::digest::sha256(statement)),
            authorization: "DPoP t".into(),
            dpop: Some("p".into()),
            client_cert_sha256: None,
            poe_state: POE_VALID.into(),
        }
    }

    #[test]
    fn a_holder_signs_only_the_pae_of_the_admitted_statement_with_a_key_it_selects() {
        for suite in SuiteId::ALL {
            holder_decision(suite);
        }
    }

    fn holder_decision(suite: SuiteId) {
        let statement = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;
        let forged = br#"{"_type":"https://in-toto.io/Statement/v1","x":1}"#;
        let pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, statement);
        let message = suite.message(&pae);
        let keys = vec!["sha256:k".to_owned()];
        let ok = evidence(statement);
        assert_eq!(
            decide(&ok, "sha256:k", &pae, suite, &message, &keys),
            Ok(())
        );

        // A coordinator that asks for the other suite's message of the real PAE.
        let other_suite = SuiteId::ALL.into_iter().find(|s| *s != suite).expect("two");
        assert!(
            decide(
                &ok,
                "sha256:k",
                &pae,
                suite,
                &other_suite.message(&pae),
                &keys
            )
            .is_err()
        );
        // A coordinator that presents the real PAE but asks for another message.
        let forged_pae = stella_signer::pae(IN_TOTO_PAYLOAD_TYPE, forged);
        let forged_message = suite.message(&forged_pae);
        assert!(decide(&ok, "sha256:k", &pae, suite, &forged_message, &keys).is_err());
        // ...or presents (and asks for) another statement's PAE.
        assert!(decide(&ok, "sha256:k", &forged_pae, suite, &forged_message, &keys).is_err());
        // ...or the same statement under another payload type.
        let other_type = stella_signer::pae("text/plain", statement);
        let other_message = suite.message(&other_type);
        assert!(decide(&ok, "sha256:k", &other_type, suite, &other_message, &keys).is_err());
        // ...or a key the admission does not name, or this registry does not select.
        assert!(decide(&ok, "sha256:other", &pae, suite, &message, &keys).is_err());
        assert!(decide(&ok, "sha256:k", &pae, suite, &message, &[]).is_err());
        // ...or an admission whose entitlement decision admitted nothing.
        let mut denied = ok.clone();
        denied.poe_state = "not_checked".into();
        assert!(decide(&denied, "sha256:k", &pae, suite, &message, &keys).is_err());
    }
}
