//! Audit API (Attestor and tenants): `GET /api/v1/signer/audit`.
//!
//! `?after=ID&limit=N[&tenant=T][&subject=sha256:..][&consistency=linearizable|stale]`. Any node
//! answers. `linearizable` (the default) first obtains a read index from the leader and waits
//! until this node has applied it, so a record acknowledged anywhere before the call is included;
//! `stale` reads what this node has applied. Tenants see their own records; auditor tenants
//! (config `auditor = true`, the dev tenant) may read all or filter by tenant.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::web::{Data, Json, Query};
use serde::Deserialize;
use stella_api::AuditPage;

use super::peer::ReadIndex;
use super::{ApiProblem, AppState};
use crate::Error;

pub const MAX_LIMIT: usize = 1000;
/// Records examined per call when filters skip most of them (the page's `next` continues).
const MAX_SCAN: usize = 20_000;
/// Audit scans running at once on this node; more callers wait their turn (storage reads run on
/// the blocking pool, never on the async workers that serve signing).
const MAX_CONCURRENT_SCANS: usize = 2;

fn scans() -> &'static tokio::sync::Semaphore {
    static SCANS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SCANS.get_or_init(|| tokio::sync::Semaphore::new(MAX_CONCURRENT_SCANS))
}

/// What one bounded scan found.
struct Scan {
    records: Vec<stella_state::AuditRecord>,
    cursor: u64,
    exhausted: bool,
}

/// Reads records after `after` until `limit` match or `MAX_SCAN` were examined (blocking I/O).
fn scan(
    view: &stella_state::storage::StateView,
    after: u64,
    limit: usize,
    tenant: Option<&str>,
    subject: Option<&str>,
) -> Result<Scan, Error> {
    let mut records = Vec::new();
    let mut cursor = after;
    let mut scanned = 0;
    let mut exhausted = false;
    while records.len() < limit && scanned < MAX_SCAN {
        let chunk = view
            .audit_after(cursor, 512)
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        if chunk.is_empty() {
            exhausted = true;
            break;
        }
        for record in chunk {
            scanned += 1;
            cursor = record.seq;
            let tenant_ok = tenant.is_none_or(|t| record.draft.tenant == t);
            let subject_ok =
                subject.is_none_or(|s| record.draft.subject_digests.iter().any(|d| d == s));
            if tenant_ok && subject_ok {
                records.push(record);
                if records.len() == limit {
                    break;
                }
            }
        }
    }
    Ok(Scan {
        records,
        cursor,
        exhausted,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    after: Option<String>,
    limit: Option<usize>,
    tenant: Option<String>,
    subject: Option<String>,
    consistency: Option<String>,
}

pub async fn list(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiProblem> {
    let caller = super::authenticate_reader(&state, &req).await?;
    Ok(Json(page(&state, &caller, query.into_inner()).await?))
}

async fn page(
    state: &AppState,
    caller: &crate::admission::Caller,
    query: AuditQuery,
) -> Result<AuditPage, Error> {
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(id) => parse_audit_id(id)?,
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let tenant = if caller.has_scope(crate::admission::optok::SCOPE_AUDIT_ALL) {
        query.tenant
    } else {
        Some(caller.tenant.clone())
    };
    let consistency = match query.consistency.as_deref() {
        None | Some("linearizable") => {
            linearize(state).await?;
            "linearizable"
        }
        Some("stale") => "stale",
        Some(other) => {
            return Err(Error::InvalidRequest(format!(
                "consistency must be linearizable or stale, not `{other}`"
            )));
        }
    };
    let view = state.cluster().view().clone();
    let _turn = scans()
        .acquire()
        .await
        .map_err(|_| Error::Unavailable("the audit reader is shutting down".into()))?;
    let subject = query.subject;
    let Scan {
        records,
        cursor,
        exhausted,
    } = tokio::task::spawn_blocking(move || {
        scan(&view, after, limit, tenant.as_deref(), subject.as_deref())
    })
    .await
    .map_err(|e| Error::Unavailable(format!("reading the audit log: {e}")))??;
    let next = if exhausted && records.len() < limit {
        None
    } else {
        Some(stella_state::audit::audit_id(cursor))
    };
    let records = records
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    Ok(AuditPage {
        records,
        next,
        consistency: consistency.to_owned(),
    })
}

/// Read-index through the leader, then wait until this node has applied it.
async fn linearize(state: &AppState) -> Result<(), Error> {
    let cluster = state.cluster();
    let index = if cluster.is_leader() {
        cluster
            .read_index()
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    } else {
        let (_, leader) = cluster
            .wait_for_leader(Duration::from_secs(3))
            .await
            .ok_or_else(|| {
                Error::Unavailable(
                    "no leader for a linearizable read; use consistency=stale".into(),
                )
            })?;
        let answer: ReadIndex = cluster
            .peers()
            .post(
                &leader.peer_url,
                "/peer/v1/read-index",
                &(),
                Duration::from_secs(5),
            )
            .await
            .map_err(|e| Error::Unavailable(format!("read index from the leader: {e}")))?;
        answer.index
    };
    cluster
        .wait_applied(index, Duration::from_secs(5))
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))
}

fn parse_audit_id(id: &str) -> Result<u64, Error> {
    let digits = id.strip_prefix("aud-").unwrap_or(id);
    digits.parse().map_err(|_| {
        Error::InvalidRequest(format!(
            "`after` must be an audit id like aud-0000000000000042, not `{id}`"
        ))
    })
}
