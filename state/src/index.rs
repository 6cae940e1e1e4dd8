//! Look-up indexes over the audit log (pure): which index rows a record gets, and the ranges a
//! look-up reads. Storage keeps every row in one table keyed `(kind, scope, value, seq)`, so a
//! look-up is one range read — O(log n) to the first hit, then one row per hit — and a page
//! resumes from its last `(value, seq)`.
//!
//! `scope` is `""` for the cluster-wide rows an auditor reads and the tenant's name for the
//! rows a tenant reads, so a tenant's look-up never walks other tenants' records.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;

/// What a look-up searches by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Kind {
    /// A bundle hash (hex), the record's own and each signature's. Cluster-wide rows only: a
    /// bundle names one record, whose tenant the reader then checks.
    Bundle = 1,
    /// A key id, the record's and each signature's.
    Key = 2,
    /// A statement subject digest (`sha256:<hex>`).
    Subject = 3,
    /// Every record of the scope's tenant (value `""`).
    Tenant = 4,
    /// The record's time to the second (`YYYY-MM-DDTHH:MM:SS`), for time ranges.
    Time = 5,
}

/// One index row without its sequence number.
pub type Row = (u8, String, String);

/// The rows record `record` gets (duplicates removed).
pub fn rows(record: &AuditRecord) -> Vec<Row> {
    let draft = &record.draft;
    let mut out: Vec<Row> = Vec::new();
    let both = |out: &mut Vec<Row>, kind: Kind, value: &str| {
        if value.is_empty() {
            return;
        }
        out.push((kind as u8, String::new(), value.to_owned()));
        if !draft.tenant.is_empty() {
            out.push((kind as u8, draft.tenant.clone(), value.to_owned()));
        }
    };
    for hash in draft
        .bundle_sha256
        .iter()
        .chain(draft.signatures.iter().map(|s| &s.bundle_sha256))
    {
        out.push((Kind::Bundle as u8, String::new(), hash.clone()));
    }
    for key in std::iter::once(&draft.key_id).chain(draft.signatures.iter().map(|s| &s.key_id)) {
        both(&mut out, Kind::Key, key);
    }
    for subject in &draft.subject_digests {
        both(&mut out, Kind::Subject, subject);
    }
    if !draft.tenant.is_empty() {
        out.push((Kind::Tenant as u8, draft.tenant.clone(), String::new()));
    }
    both(&mut out, Kind::Time, &second(&draft.time));
    out.sort();
    out.dedup();
    out
}

/// An RFC 3339 time cut to the second (`2026-11-28T10:00:00`), which sorts as time does.
pub fn second(rfc3339: &str) -> String {
    rfc3339.chars().take(19).collect()
}

/// A look-up: rows of `kind` in `scope` whose value is in `lo..=hi` (equal for exact look-ups),
/// in (value, seq) order, after `resume` when continuing a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub kind: Kind,
    pub scope: String,
    pub lo: String,
    pub hi: String,
    /// The last `(value, seq)` returned; the next page starts after it.
    pub resume: Option<(String, u64)>,
}

impl Lookup {
    pub fn exact(kind: Kind, scope: &str, value: &str) -> Lookup {
        Lookup {
            kind,
            scope: scope.to_owned(),
            lo: value.to_owned(),
            hi: value.to_owned(),
            resume: None,
        }
    }

    /// The first `(value, seq)` to read (inclusive).
    pub fn start(&self) -> (String, u64) {
        match &self.resume {
            Some((value, seq)) if (value.as_str(), *seq) >= (self.lo.as_str(), 0) => {
                match seq.checked_add(1) {
                    Some(next) => (value.clone(), next),
                    // Past the last possible seq of this value: the next value.
                    None => (format!("{value}\u{0}"), 0),
                }
            }
            _ => (self.lo.clone(), 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditDraft, Decision, SignatureRecord};

    fn record() -> AuditRecord {
        AuditRecord::chain(
            AuditDraft {
                time: "2026-11-28T10:00:00.123Z".into(),
                request_id: "r".into(),
                tenant: "acme".into(),
                caller_subject: "ci".into(),
                issuer: "i".into(),
                subject_digests: vec!["sha256:aa".into()],
                predicate_type: "stella.ops/sbom@v1".into(),
                key_id: "sha256:k1".into(),
                key_source: "file".into(),
                signing_mode: "keyful".into(),
                poe_state: "valid".into(),
                plan: None,
                provenance: None,
                certificate_serial: None,
                decision: Decision::Signed,
                reason: "signed".into(),
                bundle_sha256: Some("b1".into()),
                statement_sha256: None,
                signatures: vec![
                    SignatureRecord {
                        key_id: "sha256:k1".into(),
                        key_source: "file".into(),
                        algorithm: "ECDSA_P256_SHA256".into(),
                        certificate_serial: None,
                        bundle_sha256: "b1".into(),
                    },
                    SignatureRecord {
                        key_id: "sha256:k2".into(),
                        key_source: "pkcs11".into(),
                        algorithm: "ECDSA_P256_SHA256".into(),
                        certificate_serial: None,
                        bundle_sha256: "b2".into(),
                    },
                ],
            },
            None,
        )
    }

    #[test]
    fn a_record_is_found_by_every_signature_in_both_scopes() {
        let rows = rows(&record());
        let has = |kind: Kind, scope: &str, value: &str| {
            rows.contains(&(kind as u8, scope.to_owned(), value.to_owned()))
        };
        assert!(has(Kind::Bundle, "", "b1") && has(Kind::Bundle, "", "b2"));
        assert!(
            !has(Kind::Bundle, "acme", "b1"),
            "bundles are cluster-wide only"
        );
        for scope in ["", "acme"] {
            assert!(has(Kind::Key, scope, "sha256:k1") && has(Kind::Key, scope, "sha256:k2"));
            assert!(has(Kind::Subject, scope, "sha256:aa"));
            assert!(has(Kind::Time, scope, "2026-11-28T10:00:00"));
        }
        assert!(has(Kind::Tenant, "acme", ""));
        assert_eq!(rows.len(), 2 + 2 * 2 + 2 + 1 + 2, "no duplicates: {rows:?}");
    }

    #[test]
    fn a_page_resumes_after_its_last_row() {
        let mut lookup = Lookup::exact(Kind::Key, "", "k");
        assert_eq!(lookup.start(), ("k".into(), 0));
        lookup.resume = Some(("k".into(), 41));
        assert_eq!(lookup.start(), ("k".into(), 42));
        lookup.resume = Some(("k".into(), u64::MAX));
        assert_eq!(
            lookup.start(),
            ("k\u{0}".into(), 0),
            "no overflow at u64::MAX"
        );
        // A forged resume point before the range starts at the range.
        lookup.resume = Some(("a".into(), 5));
        assert_eq!(lookup.start(), ("k".into(), 0));
    }
}
