//! Reading the audit log for the Attestor and tenants: which index a query uses (pure), opaque
//! cursors, and the bounded read behind `GET /audit` and the NDJSON export.
//!
//! A query names at most what it filters by (bundle hash, key id, subject digest, tenant, time
//! range); the most selective filter picks the index (`stella_state::index`), the others are
//! checked on each record the index yields. The reader's scope is never taken from the query
//! or the cursor: a tenant reads its own rows, an auditor the cluster-wide ones (or one
//! tenant's, when it asks for it).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use stella_state::AuditRecord;
use stella_state::index::{Kind, Lookup, second};
use stella_state::storage::StateView;

use crate::Error;

/// Records examined per call when the filters reject most of what the index yields.
pub const MAX_EXAMINED: usize = 20_000;

/// What a reader filters by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Auditors only; a tenant always reads its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// RFC 3339, inclusive, to the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// RFC 3339, inclusive, to the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Filters {
    /// Checks the values a caller sent (sizes, shapes), so nothing unbounded reaches storage.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::InvalidRequest(what.to_owned()));
        for value in [&self.bundle_hash, &self.key_id, &self.subject, &self.tenant]
            .into_iter()
            .flatten()
        {
            if value.is_empty() || value.len() > 200 {
                return bad("filter values are 1 to 200 characters");
            }
        }
        if let Some(h) = &self.bundle_hash
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return bad("bundleHash must be 64 hex digits");
        }
        for t in [&self.since, &self.until].into_iter().flatten() {
            if time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .is_err()
            {
                return bad("since and until are RFC 3339 times (e.g. 2026-11-28T10:00:00Z)");
            }
        }
        Ok(())
    }

    fn normalized(mut self) -> Filters {
        if let Some(h) = &mut self.bundle_hash {
            *h = h.to_ascii_lowercase();
        }
        self
    }

    /// Whether `record` passes every filter (the index answered one of them).
    pub fn matches(&self, record: &AuditRecord, scope: &str) -> bool {
        let d = &record.draft;
        let time = second(&d.time);
        (scope.is_empty() || d.tenant == scope)
            && self.bundle_hash.as_ref().is_none_or(|h| {
                d.bundle_sha256.as_ref() == Some(h)
                    || d.signatures.iter().any(|s| &s.bundle_sha256 == h)
            })
            && self
                .key_id
                .as_ref()
                .is_none_or(|k| &d.key_id == k || d.signatures.iter().any(|s| &s.key_id == k))
            && self
                .subject
                .as_ref()
                .is_none_or(|s| d.subject_digests.contains(s))
            && self.since.as_ref().is_none_or(|t| time >= second(t))
            && self.until.as_ref().is_none_or(|t| time <= second(t))
    }
}

/// The scope a caller reads in: its own tenant, or for an auditor the tenant it asked for (or
/// everything).
pub fn scope(auditor: bool, caller_tenant: &str, filters: &Filters) -> String {
    if auditor {
        filters.tenant.clone().unwrap_or_default()
    } else {
        caller_tenant.to_owned()
    }
}

/// The index a query reads, most selective first; `None`: the log in order (an auditor with no
/// filter).
pub fn plan(filters: &Filters, scope: &str) -> Option<Lookup> {
    if let Some(hash) = &filters.bundle_hash {
        return Some(Lookup::exact(Kind::Bundle, "", hash));
    }
    if let Some(subject) = &filters.subject {
        return Some(Lookup::exact(Kind::Subject, scope, subject));
    }
    if let Some(key) = &filters.key_id {
        return Some(Lookup::exact(Kind::Key, scope, key));
    }
    if filters.since.is_some() || filters.until.is_some() {
        return Some(Lookup {
            kind: Kind::Time,
            scope: scope.to_owned(),
            lo: filters.since.as_deref().map(second).unwrap_or_default(),
            hi: filters
                .until
                .as_deref()
                .map_or_else(|| "~".to_owned(), second),
            resume: None,
        });
    }
    (!scope.is_empty()).then(|| Lookup::exact(Kind::Tenant, scope, ""))
}

/// Where a page continues: an opaque cursor holds the filters and the last position read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub filters: Filters,
    /// The last sequence number read (plain reads) or index position `(value, seq)`.
    pub at: Position,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Seq(u64),
    Index(String, u64),
}

const CURSOR_PREFIX: &str = "c1.";
const MAX_CURSOR_BYTES: usize = 2048;

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// `None` when `text` is not a cursor (an audit id, say); an error when it is a broken one.
    pub fn decode(text: &str) -> Result<Option<Cursor>, Error> {
        let Some(body) = text.strip_prefix(CURSOR_PREFIX) else {
            return Ok(None);
        };
        let bad = || Error::InvalidRequest("the cursor is not one this signer issued".into());
        if body.len() > MAX_CURSOR_BYTES {
            return Err(bad());
        }
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&json).map_err(|_| bad())?;
        cursor.filters.validate()?;
        Ok(Some(cursor))
    }
}

/// One bounded read.
pub struct Page {
    pub records: Vec<AuditRecord>,
    /// Where the next read starts (after everything examined).
    pub next: Cursor,
    /// The read reached the end of what the log (or index) holds now.
    pub exhausted: bool,
}

/// Reads at most `limit` matching records from `at` (blocking I/O), examining at most
/// [`MAX_EXAMINED`] records.
pub fn read(
    view: &StateView,
    filters: Filters,
    scope: &str,
    at: Option<Position>,
    limit: usize,
) -> Result<Page, Error> {
    let filters = filters.normalized();
    let storage = |e: stella_state::raft_types::StorageError| Error::Unavailable(e.to_string());
    let mut records = Vec::new();
    let mut examined = 0;
    match plan(&filters, scope) {
        None => {
            let mut after = match at {
                Some(Position::Seq(seq)) => seq,
                Some(Position::Index(..)) => {
                    return Err(Error::InvalidRequest(
                        "the cursor does not fit this query".into(),
                    ));
                }
                None => 0,
            };
            while records.len() < limit && examined < MAX_EXAMINED {
                let chunk = view.audit_after(after, 512).map_err(storage)?;
                if chunk.is_empty() {
                    return Ok(Page {
                        records,
                        next: Cursor {
                            filters,
                            at: Position::Seq(after),
                        },
                        exhausted: true,
                    });
                }
                for record in chunk {
                    examined += 1;
                    after = record.seq;
                    if filters.matches(&record, scope) {
                        records.push(record);
                        if records.len() == limit {
                            break;
                        }
                    }
                }
            }
            Ok(Page {
                records,
                next: Cursor {
                    filters,
                    at: Position::Seq(after),
                },
                exhausted: false,
            })
        }
        Some(mut lookup) => {
            lookup.resume = match at {
                Some(Position::Index(value, seq)) => Some((value, seq)),
                // An audit id: exact look-ups resume at it (their value is fixed).
                Some(Position::Seq(seq)) if lookup.lo == lookup.hi => {
                    Some((lookup.lo.clone(), seq))
                }
                Some(Position::Seq(_)) => {
                    return Err(Error::InvalidRequest(
                        "the cursor does not fit this query".into(),
                    ));
                }
                None => None,
            };
            while records.len() < limit && examined < MAX_EXAMINED {
                let rows = view.lookup(&lookup, 512).map_err(storage)?;
                if rows.is_empty() {
                    let (value, seq) = lookup.resume.unwrap_or((lookup.lo.clone(), 0));
                    return Ok(Page {
                        records,
                        next: Cursor {
                            filters,
                            at: Position::Index(value, seq),
                        },
                        exhausted: true,
                    });
                }
                for (value, seq) in rows {
                    examined += 1;
                    lookup.resume = Some((value, seq));
                    if let Some(record) = view.audit_record(seq).map_err(storage)?
                        && filters.matches(&record, scope)
                    {
                        records.push(record);
                        if records.len() == limit {
                            break;
                        }
                    }
                }
            }
            let (value, seq) = lookup.resume.unwrap_or((lookup.lo.clone(), 0));
            Ok(Page {
                records,
                next: Cursor {
                    filters,
                    at: Position::Index(value, seq),
                },
                exhausted: false,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_selective_filter_picks_the_index_in_the_callers_scope() {
        let f = Filters {
            key_id: Some("sha256:k".into()),
            subject: Some("sha256:s".into()),
            ..Filters::default()
        };
        let lookup = plan(&f, "acme").expect("indexed");
        assert_eq!(
            (lookup.kind, lookup.scope.as_str()),
            (Kind::Subject, "acme")
        );
        assert_eq!(
            plan(&Filters::default(), ""),
            None,
            "an auditor reads the log in order"
        );
        assert_eq!(
            plan(&Filters::default(), "acme").map(|l| l.kind),
            Some(Kind::Tenant),
            "a tenant reads its own rows, never a scan of everyone's"
        );
        let bundle = Filters {
            bundle_hash: Some("a".repeat(64)),
            ..Filters::default()
        };
        assert_eq!(plan(&bundle, "acme").map(|l| l.scope), Some(String::new()));
        let range = Filters {
            since: Some("2026-11-28T10:00:00Z".into()),
            ..Filters::default()
        };
        let lookup = plan(&range, "").expect("time");
        assert_eq!(
            (lookup.lo.as_str(), lookup.hi.as_str()),
            ("2026-11-28T10:00:00", "~")
        );
    }

    #[test]
    fn scope_comes_from_the_caller_never_from_the_query() {
        let f = Filters {
            tenant: Some("other".into()),
            ..Filters::default()
        };
        assert_eq!(scope(false, "acme", &f), "acme");
        assert_eq!(scope(true, "attestor", &f), "other");
        assert_eq!(scope(true, "attestor", &Filters::default()), "");
    }

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused() {
        let cursor = Cursor {
            filters: Filters {
                key_id: Some("sha256:k".into()),
                ..Filters::default()
            },
            at: Position::Index("sha256:k".into(), 42),
        };
        let text = cursor.encode();
        assert_eq!(Cursor::decode(&text).expect("decodes"), Some(cursor));
        assert_eq!(
            Cursor::decode("aud-0000000000000001").expect("not a cursor"),
            None
        );
        for bad in ["c1.!!!", "c1.e30", &format!("c1.{}", "A".repeat(5000))] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
        let forged = Cursor {
            filters: Filters {
                bundle_hash: Some("zz".into()),
                ..Filters::default()
            },
            at: Position::Seq(1),
        };
        assert!(
            Cursor::decode(&forged.encode()).is_err(),
            "filters are re-validated"
        );
    }
}
