//! Signing sessions: one supervised ractor actor per request on the leader.
//!
//! A session runs one request's leader work — a future it is handed, knowing nothing of the
//! signing service — and stops. Sessions are linked to a supervisor that outlives them; a
//! session that panics is reported to it (counted and logged) while the guards its future held
//! (a two-round attempt's `ReservationGuard`, the leader's in-flight slot) give back what they
//! held as the stack unwinds. The number of live sessions is bounded: past `capacity` a request
//! gets 503 with `Retry-After`.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use stella_api::SignDsseResponse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument;

use crate::Error;

/// The work a session runs.
type Work = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<SignDsseResponse, Error>> + Send + 'static>,
>;

#[derive(Clone)]
pub struct Sessions {
    supervisor: ActorRef<()>,
    permits: Arc<Semaphore>,
}

impl Sessions {
    pub async fn start(capacity: usize) -> Result<Sessions, Error> {
        let (supervisor, _join) = Actor::spawn(None, SessionSupervisor, ())
            .await
            .map_err(|e| Error::Config(format!("starting the session supervisor: {e}")))?;
        Ok(Sessions {
            supervisor,
            permits: Arc::new(Semaphore::new(capacity)),
        })
    }

    /// Runs `work` in its own supervised session and waits for its answer.
    pub async fn run(
        &self,
        work: impl std::future::Future<Output = Result<SignDsseResponse, Error>> + Send + 'static,
    ) -> Result<SignDsseResponse, Error> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded)?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work: Box::pin(work),
            reply,
            span: tracing::Span::current(),
            _permit: permit,
        };
        Actor::spawn_linked(None, Session, job, self.supervisor.get_cell())
            .await
            .map_err(|e| Error::Unavailable(format!("starting a signing session: {e}")))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the signing session failed".into()))?
    }

    pub fn stop(&self) {
        self.supervisor.stop(None);
    }
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<SignDsseResponse, Error>>,
    /// The request's span, so the session's logs carry its request and trace ids.
    span: tracing::Span,
    _permit: OwnedSemaphorePermit,
}

struct Session;

impl Actor for Session {
    type Msg = ();
    type State = Option<Job>;
    type Arguments = Job;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        job: Job,
    ) -> Result<Option<Job>, ActorProcessingErr> {
        Ok(Some(job))
    }

    async fn post_start(
        &self,
        myself: ActorRef<()>,
        state: &mut Option<Job>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(job) = state.take() {
            let result = job.work.instrument(job.span.clone()).await;
            let _ = job.reply.send(result);
        }
        myself.stop(None);
        Ok(())
    }
}

struct SessionSupervisor;

impl Actor for SessionSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    /// A session's end never stops the supervisor; failures are counted and logged.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            metrics::counter!("stella_signer_session_failures_total").increment(1);
            tracing::error!(session = %cell.get_id(), error = %error, "signing session failed; its reservation is released");
        }
        Ok(())
    }
}
