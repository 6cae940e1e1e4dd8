//! `apply` for quota: ledger windows, reservations, their expiry and refunds.

use super::{CONCURRENCY_RETRY_MS, Ledger, LedgerKey, Reservation, State};
use crate::command::{Admit, Reserve, Response, ThrottleReason};

impl State {
    /// The ledger of `key` in the window `now_ms` falls in, and when that window ends. Windows
    /// only move forward: a leader whose clock is behind the previous one must not reopen an
    /// older window and grant its quota twice.
    pub(super) fn ledger_window(
        &mut self,
        key: LedgerKey,
        now_ms: u64,
        window_ms: u64,
    ) -> (&mut Ledger, u64) {
        let window_ms = window_ms.max(1);
        let ledger = self.ledgers.entry(key).or_default();
        let window_start_ms = (now_ms - now_ms % window_ms).max(ledger.window_start_ms);
        if window_start_ms > ledger.window_start_ms {
            ledger.window_start_ms = window_start_ms;
            ledger.used = 0;
        }
        (ledger, window_start_ms.saturating_add(window_ms))
    }

    pub(super) fn reserve(&mut self, r: &Reserve) -> Response {
        if let Some(existing) = self.reservations.get(&r.reservation_id) {
            return Response::Reserved {
                remaining: existing.remaining,
                window_resets_at_ms: existing.window_resets_at_ms,
            };
        }
        let key = LedgerKey {
            tenant: r.tenant.clone(),
            plan: r.plan.clone(),
        };
        self.expire_reservations(&key, r.now_ms);
        let (ledger, window_resets_at_ms) = self.ledger_window(key.clone(), r.now_ms, r.window_ms);
        let window_start_ms = ledger.window_start_ms;
        if ledger.used >= r.limit {
            return Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms: window_resets_at_ms.saturating_sub(r.now_ms),
            };
        }
        if ledger.in_flight >= r.max_concurrent {
            return Response::Throttled {
                reason: ThrottleReason::Concurrency,
                retry_after_ms: CONCURRENCY_RETRY_MS,
            };
        }
        ledger.used += 1;
        ledger.in_flight += 1;
        let remaining = r.limit - ledger.used;
        self.reservations.insert(
            r.reservation_id.clone(),
            Reservation {
                ledger: key,
                window_start_ms,
                expires_at_ms: r.now_ms.saturating_add(r.ttl_ms),
                remaining,
                window_resets_at_ms,
            },
        );
        Response::Reserved {
            remaining,
            window_resets_at_ms,
        }
    }

    /// Releases (and refunds) reservations of `key` whose TTL has passed.
    pub(super) fn admit(&mut self, admit: &Admit) -> Response {
        if let Some(proof) = &admit.proof
            && !self.proofs.claim(proof, admit.reserve.now_ms)
        {
            return Response::Replayed;
        }
        self.reserve(&admit.reserve)
    }

    pub(super) fn expire_reservations(&mut self, key: &LedgerKey, now_ms: u64) {
        let expired: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, res)| &res.ledger == key && res.expires_at_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.admissions.remove(&id);
            if let Some(res) = self.reservations.remove(&id) {
                self.refund(&res);
            }
        }
    }

    pub(super) fn refund(&mut self, res: &Reservation) {
        if let Some(ledger) = self.ledgers.get_mut(&res.ledger) {
            ledger.in_flight = ledger.in_flight.saturating_sub(1);
            if ledger.window_start_ms == res.window_start_ms {
                ledger.used = ledger.used.saturating_sub(1);
            }
        }
    }
}
