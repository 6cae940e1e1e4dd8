//! Audit API (Attestor and tenants): `GET /api/v1/signer/audit` and its NDJSON export.
//!
//! `?after=ID|CURSOR&limit=N[&tenant=T][&subject=sha256:..][&bundleHash=H][&keyId=K]
//! [&since=T][&until=T][&consistency=linearizable|stale]`; filters are answered from indexes
//! (`audit_reads`). Any node
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
use crate::audit_reads::{self, Cursor, Filters, Page, Position};

pub const MAX_LIMIT: usize = 1000;
/// Audit reads running at once on this node; more callers wait their turn (storage reads run on
/// the blocking pool, never on the async workers that serve signing).
const MAX_CONCURRENT_SCANS: usize = 2;

/// Exports running at once on this node (each streams until its reader has everything).
const MAX_CONCURRENT_EXPORTS: usize = 2;
/// How long an export waits for its reader to take the next chunk before it gives up.
const EXPORT_STALL: Duration = Duration::from_secs(30);

fn exports() -> &'static tokio::sync::Semaphore {
    static EXPORTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    EXPORTS.get_or_init(|| tokio::sync::Semaphore::new(MAX_CONCURRENT_EXPORTS))
}

fn scans() -> &'static tokio::sync::Semaphore {
    static SCANS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SCANS.get_or_init(|| tokio::sync::Semaphore::new(MAX_CONCURRENT_SCANS))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// An audit id, or the `next` cursor of the previous page (which carries its filters).
    after: Option<String>,
    /// Records per page: 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Auditors only: one tenant's records (a tenant always reads its own).
    tenant: Option<String>,
    /// `sha256:<hex>` of a statement subject.
    subject: Option<String>,
    /// Hex SHA-256 of a Sigstore bundle (or of a bundle-less signature's entry).
    bundle_hash: Option<String>,
    /// A key id: every record of a signature that key made.
    key_id: Option<String>,
    /// RFC 3339: records at or after this time.
    since: Option<String>,
    /// RFC 3339: records at or before this time.
    until: Option<String>,
    /// `linearizable` (default: includes everything acknowledged before the call) or `stale`.
    consistency: Option<String>,
}

/// What a read is: filters, where it starts, and the caller's scope.
struct Read {
    filters: Filters,
    scope: String,
    at: Option<Position>,
    /// Plain reads (an auditor, no filter) page by audit id, as they always did.
    plain: bool,
}

fn read_of(caller: &crate::admission::Caller, query: &AuditQuery) -> Result<Read, Error> {
    let asked = Filters {
        bundle_hash: query.bundle_hash.clone(),
        key_id: query.key_id.clone(),
        subject: query.subject.clone(),
        tenant: query.tenant.clone(),
        since: query.since.clone(),
        until: query.until.clone(),
    };
    let (filters, at) = match query.after.as_deref() {
        None | Some("") => (asked, None),
        Some(text) => match Cursor::decode(text)? {
            Some(cursor) => (cursor.filters, Some(cursor.at)),
            None => (asked, Some(Position::Seq(parse_audit_id(text)?))),
        },
    };
    filters.validate()?;
    let auditor = caller.has_scope(crate::admission::optok::SCOPE_AUDIT_ALL);
    let scope = audit_reads::scope(auditor, &caller.tenant, &filters);
    let plain = audit_reads::plan(&filters, &scope).is_none();
    Ok(Read {
        filters,
        scope,
        at,
        plain,
    })
}

#[utoipa::path(get, operation_id = "listAuditRecords", path = stella_api::AUDIT_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"])), tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One page of audit records", body = AuditPage)))]
pub async fn list(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiProblem> {
    let caller = super::authenticate_reader(&state, &req).await?;
    Ok(Json(page(&state, &caller, query.into_inner()).await?))
}

/// `linearizable` (the default) waits for a read index; `stale` reads what is applied here.
async fn consistency(state: &AppState, asked: Option<&str>) -> Result<&'static str, Error> {
    match asked {
        None | Some("linearizable") => {
            linearize(state).await?;
            Ok("linearizable")
        }
        Some("stale") => Ok("stale"),
        Some(other) => Err(Error::InvalidRequest(format!(
            "consistency must be linearizable or stale, not `{}`",
            crate::error::clip_to(other, 40)
        ))),
    }
}

async fn page(
    state: &AppState,
    caller: &crate::admission::Caller,
    query: AuditQuery,
) -> Result<AuditPage, Error> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let read = read_of(caller, &query)?;
    let consistency = consistency(state, query.consistency.as_deref()).await?;
    let view = state.cluster().view().clone();
    let _turn = scans()
        .acquire()
        .await
        .map_err(|_| Error::Unavailable("the audit reader is shutting down".into()))?;
    let plain = read.plain;
    let Page {
        records,
        next,
        exhausted,
    } = tokio::task::spawn_blocking(move || {
        audit_reads::read(&view, read.filters, &read.scope, read.at, limit)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("reading the audit log: {e}")))??;
    let next = (!(exhausted && records.len() < limit)).then(|| match (&next.at, plain) {
        (Position::Seq(seq), true) => stella_state::audit::audit_id(*seq),
        _ => next.encode(),
    });
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

/// `GET /api/v1/signer/audit/export`: every record the caller may read from `after` (same
/// filters as the list), as NDJSON, streamed in bounded chunks; the last line is
/// `{"cursor": …}`, where the next export continues.
#[utoipa::path(get, operation_id = "exportAuditRecords", path = stella_api::AUDIT_EXPORT_PATH, security(("optok" = ["signer.audit"]), ("optok" = ["signer.audit.all"]), ("optok" = ["signer.sign"])), tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Every readable record from `after`, one RFC 8785 record per line, then one `{\"cursor\": …}` line where the next export continues", content_type = "application/x-ndjson", body = super::openapi::ExportLines)))]
pub async fn export(
    state: Data<AppState>,
    req: HttpRequest,
    query: Query<AuditQuery>,
) -> Result<actix_web::HttpResponse, ApiProblem> {
    let caller = super::authenticate_reader(&state, &req).await?;
    let query = query.into_inner();
    let read = read_of(&caller, &query)?;
    consistency(&state, query.consistency.as_deref()).await?;
    let view = state.cluster().view().clone();
    // An export holds one of the node's few export turns until it ends (exports queue behind
    // each other instead of multiplying work on the blocking pool), and a reader that stops
    // reading for EXPORT_STALL loses its export rather than holding the turn.
    let turn = exports().try_acquire().map_err(|_| {
        Error::Unavailable("exports are running on this node; retry shortly".into())
    })?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<actix_web::web::Bytes, Error>>(4);
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let mut at = read.at;
        loop {
            let page = match audit_reads::read(&view, read.filters.clone(), &read.scope, at, 500) {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.try_send(Err(e));
                    return;
                }
            };
            let mut chunk = Vec::new();
            for record in &page.records {
                chunk.extend_from_slice(&record.to_canonical_line());
                chunk.push(b'\n');
            }
            if page.exhausted {
                chunk.extend_from_slice(
                    format!("{{\"cursor\":\"{}\"}}\n", page.next.encode()).as_bytes(),
                );
            }
            let sent = runtime.block_on(tokio::time::timeout(
                EXPORT_STALL,
                tx.send(Ok(chunk.into())),
            ));
            if !matches!(sent, Ok(Ok(()))) || page.exhausted {
                return;
            }
            at = Some(page.next.at);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|item| (item.map_err(|e| std::io::Error::other(e.to_string())), rx))
    });
    Ok(actix_web::HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream))
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
            "`after` must be an audit id like aud-0000000000000042 or a `next` cursor, not `{}`",
            crate::error::clip_to(id, 80)
        ))
    })
}
