//! The quota-ledger actor: the one door to Raft for the signing path.
//!
//! Callers send commands (quota reservations, audit appends, commits, releases); the actor
//! batches everything that arrives while a proposal is in flight into one `Command::Batch` log
//! entry and answers each caller with its own response once the entry is committed and applied.
//! One fsync'd Raft round therefore carries many decisions — throughput grows with concurrency.
//!
//! The mailbox is bounded by a counter in the handle: past `capacity` pending commands the caller
//! gets `Overloaded` (503 + Retry-After) instead of queueing without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use stella_cluster::{ClusterError, ClusterHandle};
use stella_state::raft_types::{NodeAddr, NodeId};
use stella_state::{Command, Response};

/// Proposals in flight at once; more batching beats more parallel Raft rounds here.
const MAX_IN_FLIGHT: usize = 2;
const MAX_BATCH: usize = 2048;
/// A leader cut off from its quorum cannot commit; its callers get 503 after this long instead
/// of waiting for a partition to heal.
const PROPOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone)]
pub enum ProposeError {
    NotLeader(Option<(NodeId, NodeAddr)>),
    Overloaded,
    Unavailable(String),
}

type Reply = RpcReplyPort<Result<Response, ProposeError>>;

pub enum LedgerMsg {
    Propose(Box<Command>, Reply),
    Flushed(Vec<Reply>, Result<Vec<Response>, ProposeError>),
}

/// Clonable handle: bounded admission in front of the actor's mailbox.
#[derive(Clone)]
pub struct Ledger {
    actor: crate::supervise::Supervised<LedgerMsg>,
    pending: Arc<AtomicUsize>,
    capacity: usize,
}

impl Ledger {
    pub async fn start(cluster: ClusterHandle, capacity: usize) -> Result<Ledger, crate::Error> {
        let actor = crate::supervise::Supervised::start("quota-ledger", move || {
            (LedgerActor, cluster.clone())
        })
        .await?;
        Ok(Ledger {
            actor,
            pending: Arc::new(AtomicUsize::new(0)),
            capacity,
        })
    }

    /// Proposes one command and waits for its committed, applied response.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ProposeError::Overloaded);
        }
        let result = self
            .actor
            .actor()
            .call(|reply| LedgerMsg::Propose(Box::new(command), reply), None)
            .await;
        self.pending.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) => Err(ProposeError::Unavailable(
                "the ledger did not answer".into(),
            )),
            Err(e) => Err(ProposeError::Unavailable(format!(
                "the ledger is gone: {e}"
            ))),
        }
    }

    pub fn stop(&self) {
        self.actor.stop();
    }

    pub fn health(&self) -> crate::supervise::ActorHealth {
        self.actor.health()
    }
}

struct LedgerActor;

pub struct LedgerState {
    cluster: ClusterHandle,
    queue: Vec<(Command, Reply)>,
    in_flight: usize,
}

impl LedgerState {
    fn flush(&mut self, myself: &ActorRef<LedgerMsg>) {
        while self.in_flight < MAX_IN_FLIGHT && !self.queue.is_empty() {
            let take = self.queue.len().min(MAX_BATCH);
            let (commands, replies): (Vec<Command>, Vec<Reply>) = self.queue.drain(..take).unzip();
            self.in_flight += 1;
            let cluster = self.cluster.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                metrics::histogram!(crate::telemetry::RAFT_BATCH).record(commands.len() as f64);
                let started = std::time::Instant::now();
                let expected = commands.len();
                let term = cluster.term();
                // A leader cut off from its quorum stops waiting as soon as its lease lapses
                // or a newer term appears (the entry may still commit: the callers' outcome
                // is unknown, and their retries find it — exactly once).
                let leading = cluster.is_leader();
                let outcome = if leading && cluster.lease_lapsed() {
                    Err(ClusterError::Unavailable(
                        "this node leads but no quorum acknowledged it lately".into(),
                    ))
                } else {
                    let proposal = async {
                        tokio::time::timeout(
                            PROPOSE_TIMEOUT,
                            cluster.propose(Command::Batch(commands)),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            Err(ClusterError::Unavailable(format!(
                                "the proposal did not commit within {PROPOSE_TIMEOUT:?}: no quorum?"
                            )))
                        })
                    };
                    let lost = async {
                        if leading {
                            cluster.leadership_lost(term).await;
                        } else {
                            // Not the leader: the proposal answers NotLeader at once.
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        biased;
                        r = proposal => r,
                        () = lost => Err(ClusterError::Unavailable(
                            "leadership lost while the proposal waited for its commit".into(),
                        )),
                    }
                };
                if outcome.is_ok() {
                    metrics::histogram!(crate::telemetry::COMMIT_LATENCY)
                        .record(started.elapsed().as_secs_f64());
                }
                let result = match outcome {
                    Ok(Response::Batch(responses)) if responses.len() == expected => Ok(responses),
                    Ok(other) => Err(ProposeError::Unavailable(format!(
                        "unexpected batch answer: {other:?}"
                    ))),
                    Err(ClusterError::NotLeader { leader }) => Err(ProposeError::NotLeader(leader)),
                    Err(e) => Err(ProposeError::Unavailable(e.to_string())),
                };
                let _ = me.cast(LedgerMsg::Flushed(replies, result));
            });
        }
    }
}

impl Actor for LedgerActor {
    type Msg = LedgerMsg;
    type State = LedgerState;
    type Arguments = ClusterHandle;

    async fn pre_start(
        &self,
        _myself: ActorRef<LedgerMsg>,
        cluster: ClusterHandle,
    ) -> Result<LedgerState, ActorProcessingErr> {
        Ok(LedgerState {
            cluster,
            queue: Vec::new(),
            in_flight: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<LedgerMsg>,
        message: LedgerMsg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LedgerMsg::Propose(command, reply) => {
                state.queue.push((*command, reply));
            }
            LedgerMsg::Flushed(replies, result) => {
                state.in_flight -= 1;
                match result {
                    Ok(responses) => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        state.flush(&myself);
        Ok(())
    }
}
