//! Configuration changes through the leader: each is planned against the leader's state
//! (`changes::plan`, pure) and proposed as one `Configure` entry with its audit record. The
//! PoE emergency bypass is such a change.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stella_state::Command;
use stella_state::command::Response;

use super::{SigningService, rfc3339_ms};
use crate::Error;
use crate::admission::{BYPASS_TOGGLE, Caller};
use crate::changes::{self, ChangeRequest, ConfigChange};
use crate::pipeline;

pub const PEER_CONFIGURE: &str = "/peer/v1/configure";

/// What the leader answered to a configuration change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigApplied {
    pub audit_id: String,
    /// The change's key id or approval id, when it has one.
    pub subject: Option<String>,
    /// Keys a rotation retired.
    pub retired: Vec<String>,
    /// The leader's applied log index once the change applied (a node that has applied this
    /// far reads the change back).
    pub applied_index: u64,
}
impl SigningService {
    /// The PoE bypass as this node has applied it.
    pub fn poe_bypass(&self) -> stella_api::ToggleStatus {
        let now_ms = self.now_ms();
        self.inner.cluster.view().with_state(|s| {
            let toggle = s.toggles.get(BYPASS_TOGGLE);
            stella_api::ToggleStatus {
                name: BYPASS_TOGGLE.into(),
                active: s.toggle_enabled(BYPASS_TOGGLE, now_ms),
                enabled: toggle.is_some_and(|t| t.enabled),
                reason: toggle.map(|t| t.reason.clone()).unwrap_or_default(),
                actor: toggle.map(|t| t.actor.clone()).unwrap_or_default(),
                set_at: toggle.map(|t| rfc3339_ms(t.set_ms)),
                expires_at: toggle.and_then(|t| t.expires_at_ms).map(rfc3339_ms),
            }
        })
    }

    /// Switches the PoE emergency bypass; the change is audited in the same Raft entry and is
    /// in force on every node once they apply it.
    pub async fn set_poe_bypass(
        &self,
        caller: &Caller,
        request_id: &str,
        change: stella_api::PoeBypassRequest,
    ) -> Result<stella_api::ToggleStatus, Error> {
        let enabled = change.enabled;
        let request = ChangeRequest::PoeBypass {
            enabled,
            reason: pipeline::operator_reason(&change.reason)?,
            expires_in_seconds: change.expires_in_seconds,
        };
        let applied = self
            .configure(ConfigChange::new(caller, request_id, request))
            .await?;
        let actor = format!("{}@{}", caller.subject, caller.tenant);
        tracing::warn!(toggle = BYPASS_TOGGLE, enabled, actor = %actor, audit_id = %applied.audit_id, "PoE bypass changed");
        // The leader applied it; give this node a moment to apply it too, so the answer reads
        // the change back (every node applies it within a heartbeat or so).
        // (If it has not within the bound, the answer reads this node's state a moment early.)
        let _ = self
            .inner
            .cluster
            .wait_applied(applied.applied_index, Duration::from_secs(2))
            .await;
        Ok(self.poe_bypass())
    }

    /// Applies a change through the leader, with its audit record in the same entry.
    pub async fn configure(&self, change: ConfigChange) -> Result<ConfigApplied, Error> {
        let leader_side = || self.configure_as_leader(change.clone());
        crate::router::at_leader(
            &self.inner.cluster,
            PEER_CONFIGURE,
            &change,
            crate::router::admin_deadline(),
            leader_side,
        )
        .await
    }

    /// The leader's side of a configuration change (never a key generation's: those carry a
    /// group only [`SigningService::generate_as_leader`] may produce).
    pub async fn configure_as_leader(&self, change: ConfigChange) -> Result<ConfigApplied, Error> {
        if !self.inner.cluster.is_leader() || self.inner.cluster.handing_over() {
            return Err(Error::NotLeader);
        }
        self.configured(&change, None).await
    }

    /// Plans `change` against this leader's state and proposes it as one `Configure` entry. A
    /// refused change applies nothing and is not audited as done.
    pub(crate) async fn configured(
        &self,
        change: &ConfigChange,
        generated: Option<&stella_state::command::ThresholdGroup>,
    ) -> Result<ConfigApplied, Error> {
        let now_ms = self.now_ms();
        let time = self.inner.clock.now_rfc3339();
        let planned = self
            .inner
            .cluster
            .view()
            .with_state(|s| changes::plan(s, change, generated, now_ms, time))?;
        let proposal = Command::Configure {
            commands: planned.commands,
            audit: planned.audit,
        };
        match self.propose(proposal).await? {
            Response::Configured {
                audit_id: Some(audit_id),
                ..
            } => Ok(ConfigApplied {
                audit_id,
                subject: planned.subject,
                retired: planned.retired,
                applied_index: self.inner.cluster.status().applied_index.unwrap_or(0),
            }),
            Response::Configured { responses, .. } => {
                let refused = responses.iter().find(|r| r.is_refused_change());
                Err(match refused {
                    Some(Response::ApprovalLimitReached) => Error::too_many_pending_approvals(),
                    Some(other) => {
                        Error::InvalidRequest(format!("the change was not applied: {other:?}"))
                    }
                    None => Error::Unavailable("the change was not audited".into()),
                })
            }
            other => Err(Error::Unavailable(format!(
                "unexpected answer to a configuration change: {other:?}"
            ))),
        }
    }
}
