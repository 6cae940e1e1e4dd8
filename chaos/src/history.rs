//! What the workload and the nemesis saw: every HTTP attempt and every fault, with times in
//! milliseconds since the drill started. The checker and the report read only this (and the
//! audit logs collected at the end).

use serde::{Deserialize, Serialize};

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `POST /sign/dsse` by an honest client.
    Sign,
    /// The same DPoP proof as an acknowledged signing, sent again with another body.
    Replay,
    /// `GET /audit?consistency=linearizable` for one acknowledged bundle hash.
    ReadLinearizable,
    /// `GET /audit?consistency=stale`.
    ReadStale,
}

/// How an attempt ended, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// 429
    Throttled,
    /// 503
    Unavailable,
    /// Any other 4xx.
    Refused,
    /// Any other 5xx (always an invariant violation).
    ServerError,
    /// Connection refused or reset: no HTTP answer.
    Transport,
    /// The caller's own timeout fired.
    Timeout,
}

impl Outcome {
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=299 => Outcome::Ok,
            429 => Outcome::Throttled,
            503 => Outcome::Unavailable,
            400..=499 => Outcome::Refused,
            _ => Outcome::ServerError,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Throttled => "throttled",
            Outcome::Unavailable => "unavailable",
            Outcome::Refused => "refused",
            Outcome::ServerError => "server-error",
            Outcome::Transport => "transport",
            Outcome::Timeout => "timeout",
        }
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub kind: Kind,
    /// The logical request (`X-Request-Id`); retries share it and their DPoP proof.
    pub request_id: String,
    pub tenant: String,
    pub node: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The answer was `application/problem+json`.
    pub problem_json: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
    /// The DPoP proof's `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof_jti: Option<String>,
    /// A 200 signing: its bundle verified offline (and hashed to `bundleSha256`), or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_check: Option<Result<(), String>>,
    /// Reads: the bundle hash looked up (linearizable) and whether its record was there;
    /// stale reads: the (audit id, hash) pairs seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadResult>,
}

impl Attempt {
    pub fn took_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    /// Linearizable: the acknowledged signing looked for, acknowledged before the read started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wanted_audit_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// Stale: records seen (audit id, hash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<(String, String)>,
}

/// One injected fault, as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultEvent {
    pub index: usize,
    pub kind: crate::schedule::FaultKind,
    pub planned_at_s: f64,
    pub hold_s: f64,
    /// Nodes faulted (killed, paused, or cut off).
    pub nodes: Vec<usize>,
    /// Links cut (both directions), for partitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<(usize, usize)>,
    /// The clock-skew fault: how far the node's clock was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_seconds: Option<i64>,
    /// …and how far off its `Date` header was once it ran skewed (proof the fault took).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_skew_seconds: Option<i64>,
    /// Link faults: the latency added each way (ms), through the peer-link proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_delay_ms: Option<u64>,
    /// The membership fault: the fresh node that joined in the removed node's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<usize>,
    /// The snapshot catch-up fault: the leader purged its log past the stopped follower's last
    /// entry before the follower came back (so it could only catch up by a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_past_follower: Option<bool>,
    /// What the nemesis observed, in words (e.g. the log positions of a snapshot catch-up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The leader when the fault was injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<usize>,
    pub start_ms: u64,
    pub heal_ms: u64,
    /// The cluster answered ready everywhere again (after the heal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_ms: Option<u64>,
    /// Errors of the nemesis itself (a restart that failed, a rule that could not be removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Everything recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub attempts: Vec<Attempt>,
    pub faults: Vec<FaultEvent>,
    /// When the drill's load stopped (ms).
    pub end_ms: u64,
}
