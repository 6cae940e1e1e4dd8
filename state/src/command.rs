//! Commands replicated through Raft, and what applying them answers.
//!
//! Time is part of every command that needs it (`now_ms`): `apply` never reads a clock, so every
//! replica computes the same state from the same log.

use serde::{Deserialize, Serialize};

use crate::audit::AuditDraft;

// Commands are built once and moved into a Raft entry; boxing the audit draft would only add an
// allocation per signing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Reserve one signature from a tenant/plan ledger.
    Reserve(Reserve),
    /// The reserved signing happened: the grant stays counted, the concurrency slot frees up.
    Commit {
        reservation_id: String,
        now_ms: u64,
    },
    /// The reserved signing did not happen: the grant is refunded, the slot frees up.
    Release {
        reservation_id: String,
        now_ms: u64,
    },
    /// Append an audit record (chained by `apply`).
    Audit(#[serde(with = "json_draft")] AuditDraft),
    RegisterKey(KeyEntry),
    SetKeyState {
        key_id: String,
        state: KeyState,
        reason: String,
        actor: String,
        now_ms: u64,
    },
    SetToggle(Toggle),
    RequestApproval(Approval),
    DecideApproval {
        approval_id: String,
        verdict: Verdict,
        actor: String,
        reason: String,
        now_ms: u64,
    },
    /// Group commit: several commands in one log entry, applied in order.
    Batch(Vec<Command>),
    /// Admission of one signing request (format v2): claims the request's one-time DPoP proof
    /// (if any) and reserves quota, atomically — a replayed proof reserves nothing.
    Admit(Admit),
    /// A threshold key made by a distributed key generation (format v3): its registry entry and
    /// who holds which share. The shares themselves never enter the log.
    RegisterThresholdKey {
        entry: KeyEntry,
        group: ThresholdGroup,
    },
    /// New shares of a threshold key after a refresh (format v3): the same group key, new
    /// verifying shares, possibly fewer holders. Only an active threshold key can be refreshed.
    UpdateThresholdGroup {
        key_id: String,
        group: ThresholdGroup,
    },
    /// A configuration change and its audit record in one log entry (format v4): the commands
    /// apply all or nothing, and the record is appended only if every one was accepted — no
    /// leader change or overload can separate a change from its record.
    Configure {
        commands: Vec<Command>,
        #[serde(with = "json_draft")]
        audit: AuditDraft,
    },
    /// `Admit` for a request a threshold key will sign (format v4): the caller's evidence stays
    /// in the state while the reservation is open, for every share holder to re-check.
    AdmitWithEvidence {
        admit: Admit,
        evidence: AdmissionEvidence,
    },
    /// Admission of a signing request with an idempotency identity (format v5): the first
    /// time, claims the identity and reserves quota; asked again with the same binding, answers
    /// the committed outcome (`Concluded`), `InProgress` while an attempt of the same leader
    /// term still holds it, or hands the identity to this attempt when the previous one ended
    /// without an outcome or belongs to an older term (its leader is gone: its reservation is
    /// refunded). Another binding is a replay.
    AdmitOnce(AdmitOnce),
    /// The end of an admitted signing (format v5): its audit record, the reservation committed
    /// (signed) or released (failed), and the identity's outcome — in one entry. An attempt
    /// that no longer holds its identity (another attempt took it over) changes nothing and
    /// is answered `Superseded`.
    Finish(Finish),
    /// Fixes the audit log's current tree head for a checkpoint (format v6).
    CutCheckpoint {
        now_ms: u64,
    },
    /// The leader's signed note over the head it cut (format v6); see `log_tree`.
    SignCheckpoint {
        head: crate::log_tree::TreeHead,
        note: String,
    },
    /// A signing in one entry (format v7): the leader signed first, after checking the quota
    /// against its own applied state; `apply` decides again, deterministically — the proof or
    /// identity must be unused and the plan's window must have a unit left — and only then
    /// claims the proof, spends the unit, appends the audit record and keeps the identity's
    /// outcome, all together. A signing that loses the race is answered `Throttled` (or
    /// `Replayed` / `Concluded`) and its signature is never handed out (ADR 0028).
    Sign(Box<SignOnce>),
}

/// What `Sign` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOnce {
    /// The DPoP proof to claim, when no identity carries it.
    pub proof: Option<ProofClaim>,
    pub identity: Option<Identity>,
    pub quota: QuotaUse,
    #[serde(with = "json_draft")]
    pub audit: AuditDraft,
    /// The identity's outcome if granted (`audit_id`, `remaining` and `window_resets_at_ms`
    /// are filled in by `apply`).
    pub signed: SignedOutcome,
}

/// One unit of a plan's quota, asked for by `Sign`: the plan's limits as the leader's
/// configuration says, and the leader's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    pub tenant: String,
    pub plan: String,
    /// Signatures per window.
    pub limit: u64,
    pub window_ms: u64,
    pub now_ms: u64,
}

/// What `AdmitOnce` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitOnce {
    pub admit: Admit,
    pub identity: Option<Identity>,
    /// The caller's evidence, for threshold keys (see `AdmitWithEvidence`).
    pub evidence: Option<AdmissionEvidence>,
}

/// A signing request's idempotency identity: the DPoP proof (its `jti` scoped to its key) or
/// the caller's `Idempotency-Key`, scoped to the caller, hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub key: String,
    /// Hex SHA-256 over what the identity is bound to (the token and the request's hash): a
    /// second use with another binding is a replay, not a retry.
    pub binding: String,
    /// The end of the identity's validity window; the outcome is kept until then.
    pub expires_at_ms: u64,
}

/// What `Finish` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub reservation_id: String,
    /// The identity key the attempt holds, if the request has one.
    pub identity: Option<String>,
    #[serde(with = "json_draft")]
    pub audit: AuditDraft,
    /// `Some`: signed — the reservation commits and this is the identity's outcome (its
    /// `audit_id` is filled in by `apply`). `None`: failed — the reservation is released and
    /// the identity is open again (a retry is a new attempt).
    pub signed: Option<SignedOutcome>,
    pub now_ms: u64,
}

/// The committed outcome of an identity, answered to every later ask within its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Signed(SignedOutcome),
    /// Refused by quota at admission, until `until_ms`.
    Throttled {
        reason: ThrottleReason,
        until_ms: u64,
    },
}

/// Enough to answer a signing again, byte for byte: the statement is rebuilt from the request
/// (the binding pins it), the signatures and their verification material are kept here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedOutcome {
    pub audit_id: String,
    pub request_id: String,
    pub remaining: u64,
    pub window_resets_at_ms: u64,
    pub key_source: String,
    pub signatures: Vec<StoredSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSignature {
    pub key_id: String,
    pub algorithm: String,
    pub signature: Vec<u8>,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    pub certificate_chain_der: Vec<Vec<u8>>,
    pub timestamps: Vec<Vec<u8>>,
}

/// What a share holder needs to decide for itself that a threshold signature is owed: who asked
/// (the credentials exactly as presented, re-verified by each holder against its own JWKS),
/// under which plan, for which keys, and which statement — a holder releases a share only for
/// the PAE of exactly this statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionEvidence {
    pub tenant: String,
    pub plan: String,
    /// The threshold keys this admission may use.
    pub key_ids: Vec<String>,
    /// Hex SHA-256 of the in-toto statement (the DSSE payload) to be signed.
    pub statement_sha256: String,
    /// The `Authorization` header as the caller sent it (a sender-constrained OpTok).
    pub authorization: String,
    /// The DPoP proof as the caller sent it (absent for mTLS-bound tokens).
    pub dpop: Option<String>,
    /// Base64url SHA-256 of the caller's client certificate (mTLS-bound tokens).
    pub client_cert_sha256: Option<String>,
    /// The entitlement decision the receiving node made (`valid`, `stale`, `bypassed`).
    pub poe_state: String,
}

/// The public side of a threshold (FROST) key: the group's verifying material and the node
/// holding each share (format v3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdGroup {
    /// Signatures need this many shares.
    pub min_signers: u16,
    /// `(FROST participant identifier, node id)` of every share holder, by identifier.
    pub holders: Vec<(u16, u64)>,
    /// The serialized FROST public key package: the group key and every holder's verifying
    /// share (what the coordinator checks signature shares against).
    pub public_key_package: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admit {
    pub proof: Option<ProofClaim>,
    pub reserve: Reserve,
}

/// A one-time proof (a DPoP proof's `jti`, scoped to its key) seen by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofClaim {
    /// Hex SHA-256 of the key thumbprint and the `jti`; the raw values are not replicated.
    pub key: String,
    /// Until then a second use is a replay; after it the proof is stale anyway (`iat` window).
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    /// Chosen by the requester; reserving an id that is still open returns the first answer
    /// (a retried proposal never takes two grants).
    pub reservation_id: String,
    pub tenant: String,
    pub plan: String,
    /// Signatures per window.
    pub limit: u64,
    pub window_ms: u64,
    pub max_concurrent: u32,
    pub now_ms: u64,
    /// A reservation neither committed nor released by then is released by the next command that
    /// touches its ledger (a crashed session must not hold a slot forever).
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThrottleReason {
    Quota,
    Concurrency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Active,
    /// Still verifies, no longer signs.
    Retired,
    /// Compromised or withdrawn: terminal.
    Revoked,
    /// The tenant/plan's fallback key: verifies like an active key, signs only while an active
    /// key's back-end is unavailable (ADR 0022); promoted to active by a rotation.
    Standby,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub key_id: String,
    pub owner_tenant: String,
    pub plan: String,
    pub source: String,
    pub algorithm: String,
    pub public_key_pem: String,
    pub state: KeyState,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toggle {
    pub name: String,
    pub enabled: bool,
    pub reason: String,
    pub actor: String,
    pub set_ms: u64,
    /// The toggle reads as disabled from this time on.
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Approved,
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approval_id: String,
    /// What is being approved, e.g. a scanner image digest `sha256:…`.
    pub subject: String,
    pub requested_by: String,
    pub reason: String,
    pub requested_ms: u64,
    pub expires_at_ms: u64,
    pub decision: Option<ApprovalDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub verdict: Verdict,
    pub actor: String,
    pub reason: String,
    pub decided_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A log entry without an application command (blank or membership entry).
    Applied,
    Reserved {
        remaining: u64,
        window_resets_at_ms: u64,
    },
    Throttled {
        reason: ThrottleReason,
        retry_after_ms: u64,
    },
    Committed,
    Released,
    UnknownReservation,
    Audited {
        seq: u64,
        audit_id: String,
        hash: String,
    },
    KeyRegistered,
    KeyExists,
    KeyUpdated,
    KeyNotFound,
    InvalidKeyTransition {
        from: KeyState,
        to: KeyState,
    },
    ToggleSet,
    ApprovalRecorded,
    ApprovalExists,
    ApprovalNotFound,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    Batch(Vec<Response>),
    /// `Admit` with a proof the cluster has already seen: nothing was reserved.
    Replayed,
    /// `RequestApproval` from a tenant that already has `MAX_PENDING_APPROVALS_PER_TENANT`
    /// undecided, unexpired approvals: nothing was recorded.
    ApprovalLimitReached,
    /// `Configure`: each command's answer, and the audit id if the change applied (every
    /// command accepted); `None` means nothing changed and nothing was audited.
    Configured {
        responses: Vec<Response>,
        audit_id: Option<String>,
    },
    /// A command that has no place inside `Configure` (quota, audit, batches): refused.
    InvalidConfigCommand,
    /// `AdmitOnce`: an attempt of the current leader term holds the identity, with this open
    /// reservation (format v5). The leader knows whether that attempt still runs; if it does
    /// not (it failed and its release did not commit), releasing the reservation lets the next
    /// attempt in.
    InProgress {
        reservation_id: String,
    },
    /// `AdmitOnce`: the identity's committed outcome (format v5).
    Concluded(Box<Outcome>),
    /// `Finish` from an attempt that no longer holds its identity: nothing applied (format v5).
    Superseded,
    /// `CutCheckpoint`: the head to sign (format v6).
    CheckpointCut(crate::log_tree::TreeHead),
    /// `SignCheckpoint` applied: every node now serves this checkpoint (format v6).
    CheckpointSigned,
    /// `SignCheckpoint` refused: nothing changed (format v6).
    CheckpointRefused(crate::log_tree::CheckpointRefusal),
    /// `Sign` granted: the unit is spent and the record appended (format v7).
    Granted {
        audit_id: String,
        remaining: u64,
        window_resets_at_ms: u64,
    },
}

impl Response {
    /// Whether a configuration command was refused by the state (nothing changed).
    pub fn is_refused_change(&self) -> bool {
        matches!(
            self,
            Response::ApprovalExists
                | Response::ApprovalNotFound
                | Response::ApprovalAlreadyDecided
                | Response::ApprovalExpired
                | Response::ApprovalLimitReached
                | Response::KeyExists
                | Response::KeyNotFound
                | Response::InvalidKeyTransition { .. }
                | Response::InvalidConfigCommand
        )
    }
}

/// Audit drafts use serde features (optional fields, flattening in records) that a
/// non-self-describing format cannot carry; inside commands they travel as canonical JSON text.
mod json_draft {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::audit::AuditDraft;

    pub fn serialize<S: Serializer>(draft: &AuditDraft, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json_canonicalizer::to_string(draft).map_err(serde::ser::Error::custom)?;
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AuditDraft, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}
