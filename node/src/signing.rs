//! The signing service: route to the leader, then reserve → sign → audit → respond.
//!
//! Every node accepts requests. A follower forwards the (already authenticated) request to the
//! leader over the peer channel and re-routes when leadership moves; only the leader signs, so
//! quota and audit decisions are made where Raft linearizes them. On the leader a request
//! reserves quota (Raft), signs, then commits its audit record together with the reservation
//! commit in one Raft entry, and only then answers. A failed signing releases the reservation and
//! is audited. A session dropped half-way (client gone, task cancelled, panic) releases its
//! reservation through `ReservationGuard`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use stella_api::{Problem, SignDsseRequest, SignDsseResponse};
use stella_cluster::ClusterHandle;
use stella_signer::{Envelope, IN_TOTO_PAYLOAD_TYPE, KeySigner};
use stella_state::command::{Reserve, Response};
use stella_state::{Command, Decision};

use crate::Error;
use crate::auth::Caller;
use crate::clock::Clock;
use crate::config::QuotaConfig;
use crate::keys::Keyring;
use crate::ledger::{Ledger, ProposeError};
use crate::pipeline::{self, Outcome};
use crate::session::Sessions;

pub const PEER_SIGN: &str = "/peer/v1/sign";
/// How long a request may wait for a (new) leader before it gets 503.
const ROUTE_BUDGET: Duration = Duration::from_secs(5);
/// Back-off before forwarding again to a leader that just failed to answer.
const RETRY_SAME_LEADER: Duration = Duration::from_millis(500);

/// A signing request forwarded from a follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedSign {
    pub tenant: String,
    pub caller_subject: String,
    pub issuer: String,
    pub request_id: String,
    pub request: SignDsseRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardAnswer {
    Signed(Box<SignDsseResponse>),
    Refused(Problem),
    NotLeader,
}

/// What the signing service is built from (see `app.rs`).
pub struct SigningParts {
    pub keyring: Keyring,
    pub ledger: Ledger,
    pub sessions: Sessions,
    pub cluster: ClusterHandle,
    pub clock: Arc<dyn Clock>,
    pub quota: QuotaConfig,
}

#[derive(Clone)]
pub struct SigningService {
    inner: Arc<Inner>,
}

struct Inner {
    keyring: Keyring,
    ledger: Ledger,
    cluster: ClusterHandle,
    clock: Arc<dyn Clock>,
    quota: QuotaConfig,
    sessions: Sessions,
}

impl SigningService {
    pub fn new(parts: SigningParts) -> SigningService {
        let SigningParts {
            keyring,
            ledger,
            sessions,
            cluster,
            clock,
            quota,
        } = parts;
        SigningService {
            inner: Arc::new(Inner {
                keyring,
                ledger,
                cluster,
                clock,
                quota,
                sessions,
            }),
        }
    }

    pub fn cluster(&self) -> &ClusterHandle {
        &self.inner.cluster
    }

    /// Entry point for client requests on any node.
    pub async fn sign(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let result = self.route(caller, request_id, request).await;
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

    async fn route(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        let cluster = &self.inner.cluster;
        let deadline = tokio::time::Instant::now() + ROUTE_BUDGET;
        let mut failed_leader = None;
        while tokio::time::Instant::now() < deadline {
            let remaining = deadline - tokio::time::Instant::now();
            let Some((leader_id, leader)) = cluster.wait_for_leader(remaining).await else {
                break;
            };
            // A leader we could not reach a moment ago: give the election time to replace it
            // before trying it again.
            if failed_leader.is_some_and(|(id, at): (u64, tokio::time::Instant)| {
                id == leader_id && at.elapsed() < RETRY_SAME_LEADER
            }) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            if leader_id == cluster.node_id() {
                match self
                    .sign_as_leader(caller, request_id, request.clone())
                    .await
                {
                    Err(Error::NotLeader) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    other => return other,
                }
            }
            let forwarded = ForwardedSign {
                tenant: caller.tenant.clone(),
                caller_subject: caller.subject.clone(),
                issuer: caller.issuer.clone(),
                request_id: request_id.to_owned(),
                request: request.clone(),
            };
            let answer: Result<ForwardAnswer, _> = cluster
                .peers()
                .post(
                    &leader.peer_url,
                    PEER_SIGN,
                    &forwarded,
                    Duration::from_secs(30),
                )
                .await;
            match answer {
                Ok(ForwardAnswer::Signed(response)) => return Ok(*response),
                Ok(ForwardAnswer::Refused(problem)) => return Err(Error::Remote(problem)),
                Ok(ForwardAnswer::NotLeader) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => {
                    tracing::warn!(leader = leader_id, error = %e, "forwarding to the leader failed; re-routing");
                    failed_leader = Some((leader_id, tokio::time::Instant::now()));
                }
            }
        }
        Err(Error::Unavailable(
            "no reachable leader: the cluster has no quorum or is electing one".into(),
        ))
    }

    /// The leader's side: runs the request in its own supervised session. Answers `NotLeader`
    /// (never forwards) when this node is not the leader.
    pub async fn sign_as_leader(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        self.inner
            .sessions
            .run(self.clone(), caller.clone(), request_id.to_owned(), request)
            .await
    }

    /// Reserve → sign → audit → respond (what a session runs).
    pub async fn leader_pipeline(
        &self,
        caller: &Caller,
        request_id: &str,
        request: SignDsseRequest,
    ) -> Result<SignDsseResponse, Error> {
        let started = Instant::now();
        let inner = &self.inner;
        let plan = pipeline::plan(request)?;
        let signers = inner.keyring.signers_for(&caller.tenant);
        let refs: Vec<&dyn KeySigner> = signers.iter().map(|s| s.as_ref()).collect();
        let primary = signers
            .first()
            .map(|s| s.descriptor().clone())
            .ok_or_else(|| Error::Unavailable("no key for tenant".into()))?;
        let key_source = primary.source.as_str();

        // 1. Reserve quota through Raft.
        let reservation_id = format!("{request_id}/{}", random_suffix());
        let reserve = Command::Reserve(Reserve {
            reservation_id: reservation_id.clone(),
            tenant: caller.tenant.clone(),
            plan: "default".into(),
            limit: inner.quota.signatures_per_window,
            window_ms: inner.quota.window_seconds * 1000,
            max_concurrent: inner.quota.max_concurrent,
            now_ms: self.now_ms(),
            ttl_ms: inner.quota.reservation_ttl_seconds * 1000,
        });
        match self.propose(reserve).await? {
            Response::Reserved { .. } => {}
            Response::Throttled {
                retry_after_ms,
                reason,
            } => {
                return Err(Error::Throttled {
                    retry_after_seconds: retry_after_ms.div_ceil(1000).max(1),
                    reason: format!("{reason:?}"),
                });
            }
            other => {
                return Err(Error::Unavailable(format!(
                    "unexpected reservation answer: {other:?}"
                )));
            }
        }
        let mut guard = ReservationGuard {
            ledger: inner.ledger.clone(),
            reservation_id: Some(reservation_id.clone()),
            now_ms: self.now_ms(),
        };

        let draft = |decision: Decision, reason: String, bundle_sha256: Option<String>| {
            pipeline::audit_draft(Outcome {
                time: inner.clock.now_rfc3339(),
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

        // 2. Sign (CPU only).
        let signed = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, plan.payload.clone(), &refs)
            .map_err(Error::from)
            .and_then(|(envelope, ops)| {
                pipeline::bundles(&envelope, &ops).map(|b| (envelope, ops, b))
            });
        let (envelope, ops, bundles) = match signed {
            Ok(parts) => parts,
            Err(e) => {
                guard.reservation_id = None;
                let failed = Command::Batch(vec![
                    Command::Audit(draft(Decision::Failed, e.to_string(), None)),
                    Command::Release {
                        reservation_id,
                        now_ms: self.now_ms(),
                    },
                ]);
                self.propose(failed).await?;
                return Err(Error::Unavailable(e.to_string()));
            }
        };

        // 3. Audit + commit the reservation in one Raft entry, before anything is returned.
        let bundle_sha256 = bundles.first().map(|(_, h)| h.clone());
        let commit = Command::Batch(vec![
            Command::Audit(draft(
                Decision::Signed,
                "signed".into(),
                bundle_sha256.clone(),
            )),
            Command::Commit {
                reservation_id,
                now_ms: self.now_ms(),
            },
        ]);
        let audit_id = match self.propose(commit).await? {
            Response::Batch(rs) => match rs.first() {
                Some(Response::Audited { audit_id, .. }) => audit_id.clone(),
                other => {
                    return Err(Error::Unavailable(format!(
                        "unexpected audit answer: {other:?}"
                    )));
                }
            },
            other => {
                return Err(Error::Unavailable(format!(
                    "unexpected audit answer: {other:?}"
                )));
            }
        };
        guard.reservation_id = None;

        for op in &ops {
            metrics::counter!(crate::telemetry::KEY_USAGE, "key_id" => op.key_id.clone())
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
            audit_id = %audit_id,
            bundle_sha256 = %bundle_sha256.as_deref().unwrap_or(""),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "signing decision"
        );
        pipeline::response(
            &plan, &envelope, &ops, bundles, key_source, audit_id, request_id,
        )
    }

    async fn propose(&self, command: Command) -> Result<Response, Error> {
        self.inner
            .ledger
            .propose(command)
            .await
            .map_err(|e| match e {
                ProposeError::NotLeader(_) => Error::NotLeader,
                ProposeError::Overloaded => Error::Overloaded,
                ProposeError::Unavailable(m) => Error::Unavailable(m),
            })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }
}

/// Releases a reservation whose session ended without committing or releasing it.
struct ReservationGuard {
    ledger: Ledger,
    reservation_id: Option<String>,
    now_ms: u64,
}

impl Drop for ReservationGuard {
    fn drop(&mut self) {
        if let Some(reservation_id) = self.reservation_id.take() {
            let ledger = self.ledger.clone();
            let now_ms = self.now_ms;
            tokio::spawn(async move {
                let _ = ledger
                    .propose(Command::Release {
                        reservation_id,
                        now_ms,
                    })
                    .await;
            });
        }
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes)
}
