//! Requests and responses. Field names are camelCase on the wire; requests reject unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub const SIGN_DSSE_PATH: &str = "/api/v1/signer/sign/dsse";
pub const SIGN_EXPORT_PATH: &str = "/api/v1/signer/sign/export";

/// `POST /api/v1/signer/sign/export`: an Export Center run's manifest, signed as an in-toto
/// statement (`stella.ops/export@v1`) whose subjects are the manifest and each file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignExportRequest {
    pub manifest: ExportManifest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poe: Option<ProofOfEntitlement>,
    #[serde(default)]
    pub options: SignOptions,
}

/// What an export contains (upstream Export Center's `export.json`, in canonical form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportManifest {
    pub export_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub files: Vec<ExportFile>,
    /// The export's own metadata (profile, source, filters…), signed as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportFile {
    pub path: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The manifest + signature tuple.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignExportResponse {
    /// The manifest's RFC 8785 bytes as a JSON value (write it out byte for byte as
    /// `export.json`: its SHA-256 is `manifestSha256`, the statement's first subject).
    #[schema(value_type = Object)]
    pub manifest: Box<RawValue>,
    pub manifest_sha256: String,
    pub signature: SignDsseResponse,
    /// `provenance.json`: who signed the export, with what, under which plan, where it is logged.
    pub provenance: ExportProvenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportProvenance {
    pub export_id: String,
    pub manifest_sha256: String,
    pub statement_sha256: String,
    pub tenant: String,
    pub requested_by: String,
    pub signing_mode: String,
    pub key_ids: Vec<String>,
    pub key_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub bundle_sha256: String,
    pub audit_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    pub request_id: String,
    pub signed_at: String,
}

/// `POST /api/v1/signer/sign/dsse`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignDsseRequest {
    pub subject: Vec<SubjectWire>,
    pub predicate_type: String,
    pub predicate: Value,
    /// Digest of the scanner image that produced the evidence (checked by release provenance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner_image_digest: Option<String>,
    /// Proof of entitlement (checked by admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poe: Option<ProofOfEntitlement>,
    #[serde(default)]
    pub options: SignOptions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectWire {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProofOfEntitlement {
    pub format: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignOptions {
    /// `keyful` (default). Other modes arrive with the key-custody milestone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_mode: Option<String>,
}

/// Envelope and bundles travel as raw JSON: the node serializes them once, byte for byte as the
/// signing core produced them, and clients parse them with the `signer` crate.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignDsseResponse {
    /// The DSSE envelope with every signature.
    #[schema(value_type = Object)]
    pub envelope: Box<RawValue>,
    /// One Sigstore bundle v0.3 per cosign-verifiable signature, in envelope order.
    pub bundles: Vec<SignedBundle>,
    /// `bundles[0].bundleSha256`, the hash Attestor records (for a response without bundles,
    /// the first signature's entry hash: see `SignatureIdentity::bundle_sha256`).
    pub bundle_sha256: String,
    /// SHA-256 of the canonical statement (the DSSE payload).
    pub statement_sha256: String,
    pub signer_identity: SignerIdentity,
    pub audit_id: String,
    pub request_id: String,
    /// The caller's plan quota after this signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaStatus>,
    /// Where the audit record sits in the transparency log: its leaf index (the record's
    /// sequence number − 1) and leaf hash (hex SHA-256 of 0x00 ‖ the record's canonical bytes),
    /// for a later inclusion proof (`stella audit prove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_entry: Option<LogEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub log_index: u64,
    pub leaf_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    pub plan: String,
    /// Signatures per window.
    pub limit: u64,
    /// Signatures left in the current window.
    pub remaining: u64,
    /// RFC 3339 UTC time the window resets.
    pub window_resets_at: String,
    /// How the entitlement was established: `valid`, `stale` or `bypassed`.
    pub poe_state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedBundle {
    pub key_id: String,
    #[schema(value_type = Object)]
    pub bundle: Box<RawValue>,
    pub bundle_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignerIdentity {
    pub mode: String,
    pub key_id: String,
    pub key_source: String,
    pub algorithm: String,
    pub public_key_pem: String,
    /// PEM certificates, leaf first; empty for keyful signatures.
    pub certificate_chain: Vec<String>,
    /// Every signature of the envelope, in order (the fields above describe the first).
    #[serde(default)]
    pub signatures: Vec<SignatureIdentity>,
}

/// One signature of a response: who made it and the hash the audit log files it under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureIdentity {
    pub key_id: String,
    pub key_source: String,
    pub algorithm: String,
    pub public_key_pem: String,
    /// PEM certificates, leaf first; empty for keyful signatures.
    pub certificate_chain: Vec<String>,
    /// The signature's Sigstore bundle hash; for a signature without a bundle (BIP-340
    /// threshold), the SHA-256 of its RFC 8785 envelope signature entry (`{"keyid","sig"}`).
    pub bundle_sha256: String,
}

/// `GET /healthz` and `GET /readyz`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /api/v1/signer/cluster/status`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub leader: Option<u64>,
    pub term: u64,
    /// The leader's applied index: everything up to it is committed and acted on.
    pub commit_index: Option<u64>,
    pub answered_by: u64,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: u64,
    /// `voter` or `learner`.
    pub role: String,
    pub peer_url: String,
    pub api_url: String,
    pub reachable: bool,
    /// `leader`, `follower`, `candidate`, `learner` — as the member reports itself.
    pub state: Option<String>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

pub const AUDIT_PATH: &str = "/api/v1/signer/audit";
pub const CLUSTER_STATUS_PATH: &str = "/api/v1/signer/cluster/status";

/// `GET /api/v1/signer/audit`: one page of hash-chained audit records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub records: Vec<Value>,
    /// Pass as `after` for the next page; absent at the end of the log.
    pub next: Option<String>,
    pub consistency: String,
}

/// `GET /api/v1/signer/audit/export`: NDJSON, the list's filters, ending `{"cursor": …}`.
pub const AUDIT_EXPORT_PATH: &str = "/api/v1/signer/audit/export";
pub const AUDIT_CHECKPOINT_PATH: &str = "/api/v1/signer/audit/checkpoint";
pub const AUDIT_INCLUSION_PATH: &str = "/api/v1/signer/audit/proof/inclusion";
pub const AUDIT_CONSISTENCY_PATH: &str = "/api/v1/signer/audit/proof/consistency";

/// `GET /api/v1/signer/audit/proof/inclusion?(index=N|auditId=ID|bundleHash=H)[&treeSize=N]`:
/// the record (which the caller may read) and the proof that it is leaf `logIndex` of the tree
/// of `treeSize` records. Without `treeSize`, the tree of the current checkpoint, which comes
/// along. Hashes are hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InclusionProof {
    pub log_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub hashes: Vec<String>,
    pub record: Value,
    /// The signed checkpoint of `treeSize` records, when the proof is for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// `GET /api/v1/signer/audit/proof/consistency?from=N&to=M`: the proof that the tree of `from`
/// records is a prefix of the tree of `to` records (hex hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub hashes: Vec<String>,
}

pub const POE_BYPASS_PATH: &str = "/api/v1/signer/admin/poe-bypass";

/// `PUT /api/v1/signer/admin/poe-bypass` (scope `signer.admin`): switch the emergency PoE
/// bypass on (it must expire) or off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoeBypassRequest {
    pub enabled: bool,
    pub reason: String,
    /// Required when enabling: at most 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

/// A replicated toggle as the cluster holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToggleStatus {
    pub name: String,
    /// On now (set on and not expired).
    pub active: bool,
    pub enabled: bool,
    pub reason: String,
    pub actor: String,
    pub set_at: Option<String>,
    pub expires_at: Option<String>,
}

pub const REFERRERS_PATH: &str = "/api/v1/signer/verify/referrers";
pub const RELEASE_ALLOWLIST_PATH: &str = "/api/v1/signer/admin/releases/allowlist";
pub const RELEASE_APPROVALS_PATH: &str = "/api/v1/signer/admin/releases/approvals";
pub const RELEASE_DECISIONS_PATH: &str = "/api/v1/signer/admin/releases/approvals/decision";

/// `GET /api/v1/signer/verify/referrers?imageDigest=sha256:…`: the trust verdict for a scanner
/// image and the release signatures found for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersReport {
    pub image_digest: String,
    pub trusted: bool,
    /// `signature:<key id>`, `allowlist` or `approval:<id>` when trusted.
    pub path: Option<String>,
    pub reason: String,
    pub signatures: Vec<ReleaseSignature>,
    /// Entries that could not be used (malformed index, oversized manifest, …).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSignature {
    /// `sigstore-bundle` or `cosign-classic`.
    pub kind: String,
    pub manifest_digest: String,
    /// The trusted release key that verified it, if any.
    pub key_id: Option<String>,
    pub verified: bool,
    pub reason: String,
}

/// `POST /api/v1/signer/admin/releases/allowlist` (scope `signer.admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowlistChange {
    pub image_digest: String,
    /// `false` removes the digest from the allowlist.
    pub allowed: bool,
    pub reason: String,
}

/// `POST /api/v1/signer/admin/releases/approvals`: ask for a manual approval of a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalRequest {
    pub image_digest: String,
    pub reason: String,
    /// The approval (once granted) lapses this long after the request: 1 s to 90 days.
    pub expires_in_seconds: u64,
    /// The requester's proof of entitlement: required of tenants (not of operators), so only
    /// an entitled tenant can add to the replicated state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poe: Option<ProofOfEntitlement>,
}

/// `POST /api/v1/signer/admin/releases/approvals/decision` (scope `signer.admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalDecision {
    pub approval_id: String,
    /// `approved` or `denied`.
    pub verdict: String,
    pub reason: String,
}

/// The answer to a release-trust change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseChange {
    pub audit_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

pub const KEYS_PATH: &str = "/api/v1/signer/keys";
pub const KEYS_ADMIN_PATH: &str = "/api/v1/signer/admin/keys";
pub const KEYS_REVOKE_PATH: &str = "/api/v1/signer/admin/keys/revoke";
pub const KEYS_THRESHOLD_PATH: &str = "/api/v1/signer/admin/keys/threshold";

/// `POST /api/v1/signer/admin/keys/threshold` (scope `signer.admin`): a distributed key
/// generation across the cluster's nodes makes a `minSigners`-of-n threshold (FROST) key of
/// `suite` for a tenant and plan; with `rotate`, the keys active for them are retired in the
/// same replicated entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateThresholdKeyRequest {
    pub tenant: String,
    pub plan: String,
    pub min_signers: u16,
    /// Node ids that hold the shares (default: every voter).
    #[serde(default)]
    pub nodes: Vec<u64>,
    pub reason: String,
    #[serde(default)]
    pub rotate: bool,
    /// The FROST ciphersuite (default `ed25519`).
    #[serde(default)]
    pub suite: ThresholdSuite,
}

/// The ciphersuite of a threshold key.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdSuite {
    /// FROST(Ed25519, SHA-512): plain Ed25519 signatures over the DSSE PAE, which every
    /// Sigstore verifier accepts; the response carries a Sigstore bundle.
    #[default]
    Ed25519,
    /// FROST(secp256k1, SHA-256) in its BIP-340 variant: BIP-340 signatures over SHA-256(PAE),
    /// checked by libsecp256k1-compatible verifiers only; the envelope has no bundle.
    Secp256k1Tr,
}

impl ThresholdSuite {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdSuite::Ed25519 => "ed25519",
            ThresholdSuite::Secp256k1Tr => "secp256k1-tr",
        }
    }
}

pub const KEYS_THRESHOLD_REFRESH_PATH: &str = "/api/v1/signer/admin/keys/threshold/refresh";

/// `POST /api/v1/signer/admin/keys/threshold/refresh` (scope `signer.admin`): new shares of a
/// threshold key among `nodes` (default: every current holder that is a voter); the key stays,
/// holders left out lose their share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshThresholdKeyRequest {
    pub key_id: String,
    #[serde(default)]
    pub nodes: Vec<u64>,
    pub reason: String,
}

/// Who holds the shares of a threshold key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdInfo {
    pub min_signers: u16,
    /// Node ids, by FROST participant (participant `i + 1` is `holders[i]`).
    pub holders: Vec<u64>,
}

/// One entry of the replicated key registry (`GET /api/v1/signer/keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub key_id: String,
    pub tenant: String,
    pub plan: String,
    /// `file`, `pkcs11` or `threshold` (where the private key lives).
    pub source: String,
    pub algorithm: String,
    /// `active`, `retired` (verifies, no longer signs) or `revoked`.
    pub state: String,
    pub public_key_pem: String,
    /// RFC 3339: when the key became active.
    pub created_at: String,
    /// RFC 3339: the last state change (retirement or revocation time).
    pub updated_at: String,
    pub reason: String,
    /// For a threshold key: `t` and the share holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdInfo>,
}

/// `POST /api/v1/signer/admin/keys` (scope `signer.admin`): register a key for a tenant and plan;
/// with `rotate`, the keys active for them are retired in the same replicated entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterKeyRequest {
    pub tenant: String,
    pub plan: String,
    /// The key's public key (PEM). May be left out for `kms`: the node reads it from KMS, and
    /// a key given anyway must be that one.
    #[serde(default)]
    pub public_key_pem: String,
    /// `file` (default; the private key is `<keys_dir>/<hex of key id>.pem` on every node),
    /// `pkcs11` (found on each node's token by `label`) or `kms` (an AWS KMS key; `label` is
    /// its key ARN, and every node needs `[signing.kms]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The PKCS#11 key label, or the KMS key ARN (key id and alias also accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub rotate: bool,
    /// Register as the tenant/plan's standby key: it verifies like an active key but signs only
    /// while an active key's back-end is unavailable (audited as `fallback`); a later `rotate`
    /// to the same key promotes it. At most one per tenant/plan (a new one retires the old).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

/// `POST /api/v1/signer/admin/keys/revoke` (scope `signer.admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeKeyRequest {
    pub key_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    pub key_id: String,
    pub audit_id: String,
    /// Keys retired by a rotation.
    #[serde(default)]
    pub retired: Vec<String>,
    /// Members that confirmed they applied the change before the answer (a revocation waits
    /// for every reachable member).
    #[serde(default)]
    pub applied_on: Vec<u64>,
}

pub const TRUST_PATH: &str = "/api/v1/signer/trust";

/// `GET /api/v1/signer/trust`: what offline verifiers need — every active and retired key
/// (the node's default key included, tenant `*`) and the certificate authorities of keyless
/// signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustMaterial {
    pub keys: Vec<KeyInfo>,
    /// PEM certificate chains (root last) of the Fulcio CAs this signer uses.
    pub certificate_authorities: Vec<Vec<String>>,
    /// PEM certificate chains (signing certificate first, root last) of the Time-Stamping
    /// Authorities that timestamp keyless signatures.
    #[serde(default)]
    pub timestamp_authorities: Vec<Vec<String>>,
    /// The audit log's checkpoint key: its origin and note verifier key
    /// (`<origin>+<key id>+<base64 key>`), absent when the cluster signs no checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<AuditLogKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogKey {
    pub origin: String,
    pub verifier_key: String,
}
