//! Bounds on the signing work each key back-end runs at once.

use std::sync::Arc;
use std::time::Duration;

use stella_signer::KeySigner;

use crate::Error;

/// Signings each key back-end may run at once (a PKCS#11 token: its session pool).
pub const MAX_SIGNINGS_PER_BACKEND: usize = 16;
/// The longest a signing waits for a busy back-end before it gets a retryable 503.
const BACKEND_QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Per-back-end bounds on concurrent signing work (file, pkcs11, kms, keyless, threshold).
pub struct Backends {
    bounds: std::collections::HashMap<&'static str, Arc<tokio::sync::Semaphore>>,
}

impl Backends {
    /// `limits`: signings at once per back-end kind; kinds not named get
    /// [`MAX_SIGNINGS_PER_BACKEND`].
    pub fn new(limits: &[(&'static str, usize)]) -> Backends {
        let kinds = ["file", "pkcs11", "kms", "keyless", "threshold"];
        Backends {
            bounds: kinds
                .into_iter()
                .map(|kind| {
                    let n = limits
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map_or(MAX_SIGNINGS_PER_BACKEND, |(_, n)| (*n).max(1));
                    (kind, Arc::new(tokio::sync::Semaphore::new(n)))
                })
                .collect(),
        }
    }

    /// A permit of every back-end `signers` use, waiting no later than `deadline`.
    pub async fn acquire(
        &self,
        signers: &[Arc<dyn KeySigner>],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<tokio::sync::OwnedSemaphorePermit>, Error> {
        let mut kinds: Vec<&'static str> = signers
            .iter()
            .map(|s| s.descriptor().source.as_str())
            .filter(|kind| self.bounds.contains_key(kind))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut permits = Vec::with_capacity(kinds.len());
        // Waiting for a slot longer than this only hands the signing less of its deadline.
        let wait_until = deadline.min(tokio::time::Instant::now() + BACKEND_QUEUE_WAIT);
        for kind in kinds {
            let bound = self.bounds[kind].clone();
            match tokio::time::timeout_at(wait_until, bound.acquire_owned()).await {
                Ok(Ok(permit)) => permits.push(permit),
                _ => {
                    return Err(Error::Unavailable(format!(
                        "the {kind} key back-end is busy (its signings in progress did not finish in time)"
                    )));
                }
            }
        }
        Ok(permits)
    }
}

thread_local! {
    /// The request deadline of the signing running on this (blocking) thread.
    static DEADLINE: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` — a signing on the blocking pool — with `deadline` bounding every Fulcio and TSA
/// attempt it makes: no retry starts, and no call waits, past the request's own deadline.
pub fn within_deadline<R>(deadline: std::time::Instant, f: impl FnOnce() -> R) -> R {
    DEADLINE.set(Some(deadline));
    let result = f();
    DEADLINE.set(None);
    result
}

/// What is left of the deadline of the signing on this thread; `None` outside
/// [`within_deadline`]. The keyless signer (Fulcio, TSA) and the KMS back-end bound their calls
/// with it.
pub fn deadline_left() -> Option<Duration> {
    DEADLINE
        .get()
        .map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()))
}
