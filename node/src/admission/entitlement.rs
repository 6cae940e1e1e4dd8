//! The entitlement-cache actor: PoE introspection answers cached per PoE for their TTL,
//! concurrent look-ups of one PoE coalesced into one introspection (single flight), and during
//! a licensing outage the last-known answer served for a grace window (`stale`) — never after.
//!
//! The actor owns the cache and never waits on the network: a miss starts a fetch task that
//! reports back with `Fetched`, and callers wait on their reply ports.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sha2::{Digest, Sha256};

use super::licensing::{Introspection, Licensing, LicensingUnavailable, Poe};
use crate::Error;
use crate::clock::Clock;

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Longest a positive answer is reused (a license's own `exp` can cut it shorter).
    pub ttl_seconds: i64,
    /// Longest a negative answer (inactive, revoked) is reused.
    pub negative_ttl_seconds: i64,
    /// How long after its TTL a positive answer is still served while the service is down.
    pub grace_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Served from cache past its TTL because the licensing service is unreachable.
    Stale,
}

/// The cache's answer for one PoE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Known(Introspection, Freshness),
    /// The licensing service is down and no answer within grace is known.
    Unavailable(String),
}

type Reply = RpcReplyPort<Lookup>;

pub enum EntitlementMsg {
    Lookup(Poe, Reply),
    Fetched(String, Result<Introspection, LicensingUnavailable>),
}

struct Entry {
    answer: Option<Introspection>,
    /// Unix seconds until which the answer is fresh.
    fresh_until: i64,
    in_flight: bool,
    waiters: Vec<Reply>,
}

#[derive(Clone)]
pub struct EntitlementCache {
    actor: crate::supervise::Supervised<EntitlementMsg>,
}

impl EntitlementCache {
    pub async fn start(
        licensing: Arc<dyn Licensing>,
        config: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<EntitlementCache, Error> {
        // A restarted cache starts empty and refills from the licensing service.
        let actor = crate::supervise::Supervised::start("entitlement-cache", move || {
            (
                CacheActor,
                CacheArgs {
                    licensing: licensing.clone(),
                    config: config.clone(),
                    clock: clock.clone(),
                },
            )
        })
        .await?;
        Ok(EntitlementCache { actor })
    }

    pub async fn lookup(&self, poe: Poe) -> Lookup {
        match self
            .actor
            .actor()
            .call(|reply| EntitlementMsg::Lookup(poe, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            _ => Lookup::Unavailable("the entitlement cache did not answer".into()),
        }
    }

    pub fn stop(&self) {
        self.actor.stop();
    }

    pub fn health(&self) -> crate::supervise::ActorHealth {
        self.actor.health()
    }
}

struct CacheActor;

/// The most PoEs the cache holds (each authenticated caller can present new ones).
pub const MAX_ENTRIES: usize = 10_000;

pub struct CacheArgs {
    licensing: Arc<dyn Licensing>,
    config: CacheConfig,
    clock: Arc<dyn Clock>,
}

pub struct CacheState {
    args: CacheArgs,
    entries: HashMap<String, Entry>,
}

/// At `max` entries, before a new PoE gets one: entries nobody can use go first, then the one
/// that goes stale soonest (never one with a fetch in flight).
fn make_room(entries: &mut HashMap<String, Entry>, key: &str, now: i64, grace: i64, max: usize) {
    if entries.len() < max || entries.contains_key(key) {
        return;
    }
    entries.retain(|_, e| {
        e.in_flight || (e.answer.is_some() && now < e.fresh_until.saturating_add(grace))
    });
    if entries.len() >= max
        && let Some(first) = entries
            .iter()
            .filter(|(_, e)| !e.in_flight)
            .min_by_key(|(_, e)| e.fresh_until)
            .map(|(k, _)| k.clone())
    {
        entries.remove(&first);
    }
}

/// Entries are keyed by a hash of the PoE: the cache never holds license tokens as keys.
fn cache_key(poe: &Poe) -> String {
    hex::encode(Sha256::digest(
        format!("{}\n{}", poe.format, poe.value).as_bytes(),
    ))
}

impl CacheState {
    fn now(&self) -> i64 {
        self.args.clock.now().unix_timestamp()
    }

    /// How long an answer fetched at `now` stays fresh.
    fn fresh_until(&self, answer: &Introspection, now: i64) -> i64 {
        let config = &self.args.config;
        if !answer.active || answer.revoked {
            return now.saturating_add(config.negative_ttl_seconds);
        }
        let ttl_end = now.saturating_add(config.ttl_seconds);
        answer.exp.map_or(ttl_end, |exp| exp.min(ttl_end))
    }

    fn make_room(&mut self, key: &str, now: i64) {
        let grace = self.args.config.grace_seconds;
        make_room(&mut self.entries, key, now, grace, MAX_ENTRIES);
    }

    /// What to answer from an entry whose fetch just failed.
    fn on_outage(&self, entry: &Entry, error: &str, now: i64) -> Lookup {
        match &entry.answer {
            Some(answer)
                if answer.active
                    && !answer.revoked
                    && now
                        < entry
                            .fresh_until
                            .saturating_add(self.args.config.grace_seconds) =>
            {
                Lookup::Known(answer.clone(), Freshness::Stale)
            }
            _ => Lookup::Unavailable(error.to_owned()),
        }
    }
}

impl Actor for CacheActor {
    type Msg = EntitlementMsg;
    type State = CacheState;
    type Arguments = CacheArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CacheArgs,
    ) -> Result<CacheState, ActorProcessingErr> {
        Ok(CacheState {
            args,
            entries: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut CacheState,
    ) -> Result<(), ActorProcessingErr> {
        let now = state.now();
        match message {
            EntitlementMsg::Lookup(poe, reply) => {
                let key = cache_key(&poe);
                state.make_room(&key, now);
                let entry = state.entries.entry(key.clone()).or_insert(Entry {
                    answer: None,
                    fresh_until: i64::MIN,
                    in_flight: false,
                    waiters: Vec::new(),
                });
                if let Some(answer) = &entry.answer
                    && now < entry.fresh_until
                {
                    metrics::counter!(crate::telemetry::POE_LOOKUPS, "result" => "hit")
                        .increment(1);
                    let _ = reply.send(Lookup::Known(answer.clone(), Freshness::Fresh));
                    return Ok(());
                }
                entry.waiters.push(reply);
                if entry.in_flight {
                    metrics::counter!(crate::telemetry::POE_LOOKUPS, "result" => "coalesced")
                        .increment(1);
                    return Ok(());
                }
                metrics::counter!(crate::telemetry::POE_LOOKUPS, "result" => "miss").increment(1);
                entry.in_flight = true;
                let licensing = state.args.licensing.clone();
                tokio::spawn(async move {
                    let result = licensing.introspect(&poe).await;
                    let _ = myself.cast(EntitlementMsg::Fetched(key, result));
                });
            }
            EntitlementMsg::Fetched(key, result) => {
                let Some(mut entry) = state.entries.remove(&key) else {
                    return Ok(());
                };
                entry.in_flight = false;
                let answer = match result {
                    Ok(answer) => {
                        entry.fresh_until = state.fresh_until(&answer, now);
                        entry.answer = Some(answer.clone());
                        Lookup::Known(answer, Freshness::Fresh)
                    }
                    Err(LicensingUnavailable(e)) => {
                        metrics::counter!(crate::telemetry::POE_OUTAGES).increment(1);
                        tracing::warn!(error = %e, "PoE introspection failed");
                        state.on_outage(&entry, &e, now)
                    }
                };
                for waiter in entry.waiters.drain(..) {
                    let _ = waiter.send(answer.clone());
                }
                // Bound memory: an entry nobody can use any more is dropped.
                let useful = entry.answer.is_some()
                    && now
                        < entry
                            .fresh_until
                            .saturating_add(state.args.config.grace_seconds);
                if useful {
                    state.entries.insert(key, entry);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::admission::licensing::IntrospectFuture;
    use crate::clock::FixedClock;

    /// A licensing service that counts calls, answers slowly, and can go down.
    struct Counting {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl Licensing for Counting {
        fn introspect<'a>(&'a self, _poe: &'a Poe) -> IntrospectFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if self.down.load(Ordering::SeqCst) {
                    return Err(LicensingUnavailable("connection refused".into()));
                }
                Ok(Introspection {
                    active: true,
                    license_id: Some("lic-1".into()),
                    plan: Some("team".into()),
                    tenant: Some("t".into()),
                    exp: Some(10_000_000_000),
                    revoked: false,
                    inst: None,
                })
            })
        }
    }

    #[tokio::test]
    async fn lookups_coalesce_cache_and_fall_back_to_stale_within_grace_only() {
        let licensing = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            down: false.into(),
        });
        let clock = Arc::new(FixedClock::at_unix(1_000));
        let cache = EntitlementCache::start(
            licensing.clone(),
            CacheConfig {
                ttl_seconds: 60,
                negative_ttl_seconds: 5,
                grace_seconds: 300,
            },
            clock.clone(),
        )
        .await
        .expect("cache");
        let poe = Poe {
            format: "jwt".into(),
            value: "license".into(),
        };
        let answers =
            futures_util::future::join_all((0..16).map(|_| cache.lookup(poe.clone()))).await;
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Lookup::Known(_, Freshness::Fresh)))
        );
        assert_eq!(licensing.calls.load(Ordering::SeqCst), 1, "single flight");
        assert!(matches!(
            cache.lookup(poe.clone()).await,
            Lookup::Known(_, Freshness::Fresh)
        ));
        assert_eq!(
            licensing.calls.load(Ordering::SeqCst),
            1,
            "served from cache"
        );

        licensing.down.store(true, Ordering::SeqCst);
        clock.set_unix(1_000 + 61);
        assert!(matches!(
            cache.lookup(poe.clone()).await,
            Lookup::Known(_, Freshness::Stale)
        ));
        clock.set_unix(1_000 + 60 + 299);
        assert!(matches!(
            cache.lookup(poe.clone()).await,
            Lookup::Known(_, Freshness::Stale)
        ));
        clock.set_unix(1_000 + 60 + 300);
        assert!(matches!(
            cache.lookup(poe.clone()).await,
            Lookup::Unavailable(_)
        ));
        let never_seen = Poe {
            format: "jwt".into(),
            value: "other".into(),
        };
        assert!(matches!(
            cache.lookup(never_seen).await,
            Lookup::Unavailable(_)
        ));
        cache.stop();
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_useless_first() {
        let entry = |fresh_until: i64, in_flight: bool| Entry {
            answer: Some(Introspection {
                active: true,
                license_id: None,
                plan: None,
                tenant: None,
                exp: None,
                revoked: false,
                inst: None,
            }),
            fresh_until,
            in_flight,
            waiters: Vec::new(),
        };
        let mut entries: HashMap<String, Entry> = HashMap::new();
        entries.insert("expired".into(), entry(10, false));
        entries.insert("soon".into(), entry(2_000, false));
        entries.insert("late".into(), entry(9_000, false));
        entries.insert("fetching".into(), entry(i64::MIN, true));
        // Below the bound nothing moves; a known key never evicts.
        make_room(&mut entries, "new", 1_000, 100, 5);
        make_room(&mut entries, "late", 1_000, 100, 4);
        assert_eq!(entries.len(), 4);
        // At the bound the unusable entry goes first...
        make_room(&mut entries, "new", 1_000, 100, 4);
        assert!(!entries.contains_key("expired"));
        assert_eq!(entries.len(), 3);
        // ...then the one that goes stale soonest, never one being fetched.
        make_room(&mut entries, "new", 1_000, 100, 3);
        assert!(!entries.contains_key("soon"));
        assert!(entries.contains_key("fetching") && entries.contains_key("late"));
    }
}
