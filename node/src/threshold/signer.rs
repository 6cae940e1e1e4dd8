//! The coordinator: a [`KeySigner`] for one registered threshold key that runs the two FROST
//! rounds with `t` holders, verifies the aggregate and reports left-out holders.

use std::collections::BTreeMap;
use std::sync::Arc;

use stella_signer::threshold::{
    ExclusionReason, GroupKey, ParticipantId, ShareTransport, ThresholdError, threshold_sign,
};
use stella_signer::{Error as SignerError, KeyDescriptor, KeySigner, KeySource, SignedOperation};
use stella_state::command::ThresholdGroup;

use super::*;

/// The coordinator's transport for one key: participant → node.
struct KeyTransport<'a> {
    holders: &'a Holders,
    nodes: BTreeMap<ParticipantId, u64>,
    /// The admission (reservation id) and the PAE every holder checks.
    admission: &'a str,
    pae: &'a [u8],
}

impl KeyTransport<'_> {
    fn node(&self, holder: ParticipantId) -> Result<u64, ThresholdError> {
        self.nodes
            .get(&holder)
            .copied()
            .ok_or(ThresholdError::UnknownParticipant(holder))
    }
}

impl ShareTransport for KeyTransport<'_> {
    async fn commit(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let node = self.node(holder)?;
        let request = CommitRequest {
            key_id: key_id.to_owned(),
            session: session.to_vec(),
            admission: self.admission.to_owned(),
        };
        self.holders
            .call(
                node,
                PEER_COMMIT,
                &request,
                SIGN_CALL_TIMEOUT,
                self.holders.commit(request.clone()),
            )
            .await
            .map_err(|reason| ThresholdError::Transport { holder, reason })
    }

    async fn sign(
        &self,
        holder: ParticipantId,
        key_id: &str,
        session: &[u8],
        signing_package: &[u8],
    ) -> Result<Vec<u8>, ThresholdError> {
        let node = self.node(holder)?;
        let request = SignShareRequest {
            key_id: key_id.to_owned(),
            session: session.to_vec(),
            signing_package: signing_package.to_vec(),
            admission: self.admission.to_owned(),
            pae: self.pae.to_vec(),
        };
        self.holders
            .call(
                node,
                PEER_SIGN_SHARE,
                &request,
                SIGN_CALL_TIMEOUT,
                self.holders.sign_share(request.clone()),
            )
            .await
            .map_err(|reason| ThresholdError::Transport { holder, reason })
    }
}

/// A registered threshold key, signing through `t` of its holders.
pub struct ThresholdKeySigner {
    holders: Holders,
    group: Arc<GroupKey>,
    nodes: BTreeMap<ParticipantId, u64>,
    runtime: tokio::runtime::Handle,
    descriptor: KeyDescriptor,
    /// The admission (reservation id) this signer signs for: holders sign nothing else.
    admission: String,
    /// Chaos drills only: coordinate a signature over a statement nobody admitted.
    tamper: bool,
}

impl ThresholdKeySigner {
    /// A signer for one admitted request (`admission`: its reservation id).
    pub fn new(
        holders: Holders,
        group: &ThresholdGroup,
        admission: &str,
        tamper: bool,
    ) -> Result<ThresholdKeySigner, String> {
        let key = holders.groups.parse(&group.public_key_package)?;
        let public_key = key.public_key().clone();
        Ok(ThresholdKeySigner {
            holders,
            nodes: group
                .holders
                .iter()
                .map(|(p, n)| (ParticipantId(*p), *n))
                .collect(),
            runtime: tokio::runtime::Handle::current(),
            descriptor: KeyDescriptor {
                key_id: key.key_id(),
                algorithm: key.suite().algorithm(),
                source: KeySource::Threshold,
                public_key,
            },
            group: key,
            admission: admission.to_owned(),
            tamper,
        })
    }

    /// Signs `message` (the PAE) through the holders; async, for the leader's pipeline.
    pub async fn sign_async(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        // A tampering coordinator (a drill) asks for a statement of its own choosing.
        let forged;
        let message = if self.tamper {
            forged = stella_signer::pae(
                stella_signer::IN_TOTO_PAYLOAD_TYPE,
                br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"forged"}"#,
            );
            tracing::warn!(key_id = %self.descriptor.key_id, "[threshold] drill_tamper_as_coordinator is on: asking the holders to sign a forged statement");
            &forged[..]
        } else {
            message
        };
        let transport = KeyTransport {
            holders: &self.holders,
            nodes: self.nodes.clone(),
            admission: &self.admission,
            pae: message,
        };
        let available: Vec<ParticipantId> = self.nodes.keys().copied().collect();
        let name = |p: &ParticipantId| {
            format!(
                "holder {p} (node {})",
                self.nodes.get(p).copied().unwrap_or_default()
            )
        };
        let signed = threshold_sign(&transport, &self.group, &available, message)
            .await
            .map_err(|e| match e {
                ThresholdError::BadShare { culprits } => SignerError::Signing(format!(
                    "invalid signature shares from {}",
                    culprits.iter().map(name).collect::<Vec<_>>().join(", ")
                )),
                other => SignerError::Threshold(other),
            })?;
        let remarks = signed
            .excluded
            .iter()
            .map(|(p, why)| match why {
                ExclusionReason::BadShare => format!("{} sent an invalid signature share", name(p)),
                ExclusionReason::MalformedCommitments(e) => {
                    format!("{} sent malformed commitments: {e}", name(p))
                }
                ExclusionReason::Unreachable(e) => format!("{} unreachable: {e}", name(p)),
            })
            .collect::<Vec<_>>();
        for remark in &remarks {
            tracing::warn!(key_id = %self.descriptor.key_id, "threshold signing: {remark}");
        }
        Ok(SignedOperation {
            key_id: self.descriptor.key_id.clone(),
            algorithm: self.descriptor.algorithm,
            signature: signed.signature.to_vec(),
            public_key: self.descriptor.public_key.clone(),
            certificate_chain_der: Vec::new(),
            timestamps: Vec::new(),
            remarks,
        })
    }
}

impl KeySigner for ThresholdKeySigner {
    fn descriptor(&self) -> &KeyDescriptor {
        &self.descriptor
    }

    /// Runs on the blocking pool (the pipeline signs there): waits on the async rounds.
    fn sign(&self, message: &[u8]) -> Result<SignedOperation, SignerError> {
        self.runtime.block_on(self.sign_async(message))
    }
}
