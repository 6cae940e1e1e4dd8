//! Model test: seeded random command sequences go through `State::apply` and through a naive
//! model written independently (lists of grants, counted on demand); every answer must agree.
//! Every few dozen steps the state is encoded, dropped and decoded again — a restart from a
//! snapshot — and the run continues from the decoded copy.

use std::collections::BTreeMap;

use stella_state::command::{Reserve, Response, ThrottleReason};
use stella_state::machine::CONCURRENCY_RETRY_MS;
use stella_state::{AuditDraft, AuditRecord, Command, Decision, State, codec, verify_chain};

/// xorshift64*: deterministic, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum GrantState {
    Open,
    Committed,
    Refunded,
}

struct Grant {
    ledger: (String, String),
    window_start: u64,
    expires: u64,
    state: GrantState,
    answer: Response,
}

#[derive(Default)]
struct Model {
    grants: BTreeMap<String, Grant>,
    window_of: BTreeMap<(String, String), u64>,
    audit_count: u64,
}

impl Model {
    fn reserve(&mut self, r: &Reserve) -> Response {
        if let Some(g) = self
            .grants
            .get(&r.reservation_id)
            .filter(|g| g.state == GrantState::Open)
        {
            return g.answer.clone();
        }
        let ledger = (r.tenant.clone(), r.plan.clone());
        for g in self.grants.values_mut() {
            if g.ledger == ledger && g.state == GrantState::Open && g.expires <= r.now_ms {
                g.state = GrantState::Refunded;
            }
        }
        let last = self.window_of.get(&ledger).copied().unwrap_or(0);
        let ws = (r.now_ms - r.now_ms % r.window_ms).max(last);
        self.window_of.insert(ledger.clone(), ws);
        let used = self
            .grants
            .values()
            .filter(|g| {
                g.ledger == ledger && g.window_start == ws && g.state != GrantState::Refunded
            })
            .count() as u64;
        let in_flight = self
            .grants
            .values()
            .filter(|g| g.ledger == ledger && g.state == GrantState::Open)
            .count() as u32;
        if used >= r.limit {
            return Response::Throttled {
                reason: ThrottleReason::Quota,
                retry_after_ms: (ws + r.window_ms).saturating_sub(r.now_ms),
            };
        }
        if in_flight >= r.max_concurrent {
            return Response::Throttled {
                reason: ThrottleReason::Concurrency,
                retry_after_ms: CONCURRENCY_RETRY_MS,
            };
        }
        let answer = Response::Reserved {
            remaining: r.limit - used - 1,
            window_resets_at_ms: ws + r.window_ms,
        };
        // A finished reservation's id may be reused; its old grant keeps counting under a new key.
        if let Some(old) = self.grants.remove(&r.reservation_id) {
            self.grants.insert(
                format!("{}#finished{}", r.reservation_id, self.grants.len()),
                old,
            );
        }
        self.grants.insert(
            r.reservation_id.clone(),
            Grant {
                ledger,
                window_start: ws,
                expires: r.now_ms + r.ttl_ms,
                state: GrantState::Open,
                answer: answer.clone(),
            },
        );
        answer
    }

    fn finish(&mut self, id: &str, to: GrantState) -> Response {
        match self.grants.get_mut(id) {
            Some(g) if g.state == GrantState::Open => {
                g.state = to;
                if to == GrantState::Committed {
                    Response::Committed
                } else {
                    Response::Released
                }
            }
            _ => Response::UnknownReservation,
        }
    }
}

fn draft(i: u64) -> AuditDraft {
    AuditDraft {
        time: format!("t{i}"),
        request_id: format!("r{i}"),
        tenant: "t".into(),
        caller_subject: "c".into(),
        issuer: "i".into(),
        subject_digests: vec![],
        predicate_type: "stella.ops/sbom@v1".into(),
        key_id: "k".into(),
        key_source: "file".into(),
        signing_mode: "keyful".into(),
        poe_state: "ok".into(),
        plan: None,
        provenance: None,
        certificate_serial: None,
        decision: Decision::Signed,
        reason: "signed".into(),
        bundle_sha256: i.is_multiple_of(2).then(|| format!("{i:064}")),
        statement_sha256: None,
        signatures: Vec::new(),
    }
}

fn run(seed: u64, steps: u64, seen: &mut BTreeMap<String, u64>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut state = State::default();
    let mut model = Model::default();
    let mut emitted: Vec<AuditRecord> = Vec::new();
    let mut now: u64 = 1_000_000;
    let mut next_id = 0u64;
    let tenants = ["a", "a"];
    let plans = ["free", "pro"];
    for step in 0..steps {
        now = match rng.below(20) {
            0 => now.saturating_sub(rng.below(3_000)), // a leader with a slower clock
            1 => now + 10_000,                         // a long pause: windows roll
            _ => now + rng.below(400),
        };
        let command = match rng.below(10) {
            0..=3 => {
                let id = if next_id > 0 && rng.below(8) == 0 {
                    rng.below(next_id)
                } else {
                    next_id
                };
                next_id = next_id.max(id + 1);
                Command::Reserve(Reserve {
                    reservation_id: format!("res-{id}"),
                    tenant: tenants[rng.below(2) as usize].into(),
                    plan: plans[rng.below(2) as usize].into(),
                    limit: 4,
                    window_ms: 10_000,
                    max_concurrent: 2,
                    now_ms: now,
                    ttl_ms: 2_000,
                })
            }
            4 | 5 => Command::Commit {
                reservation_id: format!("res-{}", rng.below(next_id + 2)),
                now_ms: now,
            },
            6 | 7 => Command::Release {
                reservation_id: format!("res-{}", rng.below(next_id + 2)),
                now_ms: now,
            },
            8 => Command::Audit(draft(step)),
            _ => Command::Batch(vec![
                Command::Audit(draft(step)),
                Command::Commit {
                    reservation_id: format!("res-{}", rng.below(next_id + 1)),
                    now_ms: now,
                },
            ]),
        };
        let expected = expect(&mut model, &command);
        let got = without_hashes(state.apply(&command, &mut emitted));
        let kind = format!("{got:?}");
        let kind = kind
            .split([' ', '(', '{'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let kind = match &got {
            Response::Throttled { reason, .. } => format!("Throttled::{reason:?}"),
            _ => kind,
        };
        *seen.entry(kind).or_default() += 1;
        assert_eq!(got, expected, "seed {seed} step {step}: {command:?}");
        assert_eq!(
            emitted.len() as u64,
            model.audit_count,
            "seed {seed} step {step}"
        );
        if rng.below(40) == 0 {
            let bytes = codec::encode(&state).expect("encode");
            state = codec::decode(&bytes).expect("decode");
        }
    }
    assert_eq!(
        verify_chain(&emitted, None),
        Ok(()),
        "seed {seed}: the audit chain survives restarts"
    );
}

fn expect(model: &mut Model, command: &Command) -> Response {
    match command {
        Command::Reserve(r) => model.reserve(r),
        Command::Commit { reservation_id, .. } => {
            model.finish(reservation_id, GrantState::Committed)
        }
        Command::Release { reservation_id, .. } => {
            model.finish(reservation_id, GrantState::Refunded)
        }
        Command::Audit(_) => {
            model.audit_count += 1;
            // Seq and id are checked here; the hash chain is checked at the end of the run.
            Response::Audited {
                seq: model.audit_count,
                audit_id: stella_state::audit::audit_id(model.audit_count),
                hash: String::new(),
            }
        }
        Command::Batch(cs) => Response::Batch(cs.iter().map(|c| expect(model, c)).collect()),
        other => panic!("the model does not cover {other:?}"),
    }
}

/// The model does not recompute hashes; the chain is verified separately.
fn without_hashes(response: Response) -> Response {
    match response {
        Response::Audited { seq, audit_id, .. } => Response::Audited {
            seq,
            audit_id,
            hash: String::new(),
        },
        Response::Batch(rs) => Response::Batch(rs.into_iter().map(without_hashes).collect()),
        other => other,
    }
}

#[test]
fn apply_matches_the_model_across_seeds_and_restarts() {
    let mut seen = BTreeMap::new();
    for seed in 0..48 {
        run(seed, 600, &mut seen);
    }
    // The generator must actually reach every path, or agreement proves little.
    for kind in [
        "Reserved",
        "Throttled::Quota",
        "Throttled::Concurrency",
        "Committed",
        "Released",
        "UnknownReservation",
        "Audited",
        "Batch",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) >= 20,
            "{kind} reached only {:?} times: {seen:?}",
            seen.get(kind)
        );
    }
}
