//! Audit records and the hash chain.
//!
//! Each record commits to its predecessor: `hash = SHA-256(JCS(record without "hash"))` and the
//! record's `prevHash` is the previous record's `hash` (64 zeros for the first one). Changing,
//! dropping or reordering any committed record breaks every later link, which
//! [`verify_chain`] reports with the offending sequence number.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Signed,
    Failed,
    Denied,
    /// An operator changed how the cluster decides (e.g. the PoE emergency bypass).
    Configured,
}

/// Everything about one decision that the caller knows before it is sequenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditDraft {
    /// RFC 3339 UTC, from the node's time source.
    pub time: String,
    pub request_id: String,
    pub tenant: String,
    pub caller_subject: String,
    pub issuer: String,
    /// `sha256:<hex>` of every statement subject.
    pub subject_digests: Vec<String>,
    pub predicate_type: String,
    pub key_id: String,
    pub key_source: String,
    pub signing_mode: String,
    pub poe_state: String,
    /// The plan whose quota applied (absent for records written before plans existed, and for
    /// requests refused before a plan was known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// How the scanner release was trusted (`signature:<key id>`, `allowlist`,
    /// `approval:<id>`), for requests that needed release provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
    /// Serial (hex) of the short-lived certificate of a keyless signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    pub decision: Decision,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_sha256: Option<String>,
    /// Every signature of a signed response, in envelope order (the fields above describe the
    /// first). Absent from records of one signature written before it existed, so their hashes
    /// are unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureRecord>,
}

/// One signature of a signed response, as the audit log keeps it: enough to find every
/// signature a key made (`docs/runbooks/key-compromise.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureRecord {
    pub key_id: String,
    pub key_source: String,
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// The hash of this signature's Sigstore bundle; for a signature without one (BIP-340
    /// threshold), the hash of its canonical envelope signature entry (`docs/audit.md`).
    pub bundle_sha256: String,
}

/// A sequenced, chained audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    pub audit_id: String,
    #[serde(flatten)]
    pub draft: AuditDraft,
    pub prev_hash: String,
    pub hash: String,
}

/// Hashed view: the record without its own `hash`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Unhashed<'a> {
    seq: u64,
    audit_id: &'a str,
    #[serde(flatten)]
    draft: &'a AuditDraft,
    prev_hash: &'a str,
}

/// The audit id of sequence number `seq`: stable, sortable, and what `?after=` takes.
pub fn audit_id(seq: u64) -> String {
    format!("aud-{seq:016}")
}

impl AuditRecord {
    /// Sequences `draft` after the record `(prev_seq, prev_hash)`; `None` for the first record.
    pub fn chain(draft: AuditDraft, prev: Option<(u64, &str)>) -> AuditRecord {
        let (seq, prev_hash) = match prev {
            Some((prev_seq, prev_hash)) => (prev_seq + 1, prev_hash.to_owned()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let audit_id = audit_id(seq);
        let hash = content_hash(seq, &audit_id, &draft, &prev_hash);
        AuditRecord {
            seq,
            audit_id,
            draft,
            prev_hash,
            hash,
        }
    }

    /// The hash this record should carry given its content.
    pub fn computed_hash(&self) -> String {
        content_hash(self.seq, &self.audit_id, &self.draft, &self.prev_hash)
    }

    /// One canonical JSON line (no trailing newline).
    pub fn to_canonical_line(&self) -> Vec<u8> {
        // Serialization of this plain struct cannot fail (string keys, no floats).
        serde_json_canonicalizer::to_vec(self).unwrap_or_default()
    }
}

fn content_hash(seq: u64, audit_id: &str, draft: &AuditDraft, prev_hash: &str) -> String {
    let bytes = serde_json_canonicalizer::to_vec(&Unhashed {
        seq,
        audit_id,
        draft,
        prev_hash,
    })
    .unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditChainError {
    #[error("record {seq}: sequence gap (expected {expected})")]
    Gap { seq: u64, expected: u64 },
    #[error("record {seq}: prevHash does not match the previous record")]
    BrokenLink { seq: u64 },
    #[error("record {seq}: content does not match its hash")]
    Tampered { seq: u64 },
    #[error("record {seq}: audit id `{audit_id}` does not match its sequence number")]
    BadId { seq: u64, audit_id: String },
}

/// Verifies a contiguous run of records. `prev` is the record before the first one
/// (`None` when the run starts at the genesis).
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    prev: Option<(u64, &str)>,
) -> Result<(), AuditChainError> {
    let (mut expected_seq, mut expected_prev) = match prev {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS_HASH.to_owned()),
    };
    for record in records {
        if record.seq != expected_seq {
            return Err(AuditChainError::Gap {
                seq: record.seq,
                expected: expected_seq,
            });
        }
        if record.audit_id != audit_id(record.seq) {
            return Err(AuditChainError::BadId {
                seq: record.seq,
                audit_id: record.audit_id.clone(),
            });
        }
        if record.prev_hash != expected_prev {
            return Err(AuditChainError::BrokenLink { seq: record.seq });
        }
        if record.computed_hash() != record.hash {
            return Err(AuditChainError::Tampered { seq: record.seq });
        }
        expected_seq += 1;
        expected_prev = record.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(n: u32) -> AuditDraft {
        AuditDraft {
            time: "2026-11-28T10:00:00Z".into(),
            request_id: format!("req-{n}"),
            tenant: "tenant-a".into(),
            caller_subject: "dev".into(),
            issuer: "dev".into(),
            subject_digests: vec![format!("sha256:{}", "a".repeat(64))],
            predicate_type: "stella.ops/sbom@v1".into(),
            key_id: "sha256:00".into(),
            key_source: "file".into(),
            signing_mode: "keyful".into(),
            poe_state: "not_required".into(),
            plan: None,
            provenance: None,
            certificate_serial: None,
            decision: Decision::Signed,
            reason: "ok".into(),
            bundle_sha256: Some("b".repeat(64)),
            statement_sha256: None,
            signatures: Vec::new(),
        }
    }

    fn chain_of(n: u32) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let record = AuditRecord::chain(draft(i), prev);
            out.push(record);
        }
        out
    }

    #[test]
    fn a_fresh_chain_verifies_and_round_trips() {
        let records = chain_of(5);
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(records[4].audit_id, "aud-0000000000000005");
        assert_eq!(verify_chain(&records, None), Ok(()));
        let line = records[2].to_canonical_line();
        let back: AuditRecord = serde_json::from_slice(&line).expect("parse");
        assert_eq!(back, records[2]);
        assert_eq!(
            verify_chain(&records[3..], Some((records[2].seq, &records[2].hash))),
            Ok(())
        );
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let records = chain_of(4);
        let mut edited = records.clone();
        edited[1].draft.tenant = "tenant-b".into();
        assert_eq!(
            verify_chain(&edited, None),
            Err(AuditChainError::Tampered { seq: 2 })
        );

        let mut dropped = records.clone();
        dropped.remove(1);
        assert_eq!(
            verify_chain(&dropped, None),
            Err(AuditChainError::Gap {
                seq: 3,
                expected: 2
            })
        );

        let mut relinked = records.clone();
        relinked[2].prev_hash = GENESIS_HASH.into();
        relinked[2].hash = relinked[2].computed_hash();
        assert_eq!(
            verify_chain(&relinked, None),
            Err(AuditChainError::BrokenLink { seq: 3 })
        );

        let mut renamed = records;
        renamed[0].audit_id = "aud-x".into();
        assert!(matches!(
            verify_chain(&renamed, None),
            Err(AuditChainError::BadId { seq: 1, .. })
        ));
    }

    #[test]
    fn the_hash_is_fixed_for_fixed_content() {
        // Golden: the record format is a persistence format; a change here is a format break.
        let record = AuditRecord::chain(draft(0), None);
        assert_eq!(record.hash, record.computed_hash());
        assert_eq!(record.hash, GOLDEN_FIRST_HASH);
    }

    const GOLDEN_FIRST_HASH: &str =
        "43b08650bff6cd8d168e21b4dad7885a2aa737dd33c6414764f117c0946ae8ac";
}
