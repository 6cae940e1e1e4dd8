//! The shard's shares at rest: one sealed file per threshold key (AES-256-GCM under the node's
//! share key, bound to the key id and node id), the pending share of a refresh, and the share
//! key itself.

use std::path::PathBuf;
use std::sync::Arc;

use stella_signer::threshold::KeyShare;

use super::ShardState;
use crate::Error;

impl ShardState {
    pub(super) fn destroy(&mut self, key_id: &str) -> Result<bool, String> {
        self.shares.remove(key_id);
        self.nonces.retain(|(k, _), _| k != key_id);
        let _ = std::fs::remove_file(self.pending_path(key_id));
        match std::fs::remove_file(self.share_path(key_id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("removing the share of {key_id}: {e}")),
        }
    }

    /// This node's share of `key_id`, opened from disk on first use. With `current` (the
    /// verifying share the registry expects), a share that does not match is replaced by the
    /// pending one from a refresh if that matches, and refused otherwise.
    pub(super) fn share(
        &mut self,
        key_id: &str,
        current: Option<Vec<u8>>,
    ) -> Result<Arc<KeyShare>, String> {
        let share = match self.shares.get(key_id) {
            Some(share) => share.clone(),
            None => {
                let share = Arc::new(self.open(&self.share_path(key_id), key_id)?);
                self.shares.insert(key_id.to_owned(), share.clone());
                share
            }
        };
        let Some(expected) = current else {
            return Ok(share);
        };
        if share.verifying_share().map_err(|e| e.to_string())? == expected {
            return Ok(share);
        }
        let pending_path = self.pending_path(key_id);
        let pending = self.open(&pending_path, key_id).map_err(|_| {
            format!("this node's share of {key_id} is not the registry's current one")
        })?;
        if pending.verifying_share().map_err(|e| e.to_string())? != expected {
            return Err(format!(
                "neither of this node's shares of {key_id} is the registry's current one"
            ));
        }
        std::fs::rename(&pending_path, self.share_path(key_id))
            .map_err(|e| format!("promoting the refreshed share: {e}"))?;
        tracing::info!(key_id = %key_id, "the refreshed share is now current");
        let pending = Arc::new(pending);
        self.shares.insert(key_id.to_owned(), pending.clone());
        Ok(pending)
    }

    pub(super) fn open(&self, path: &std::path::Path, key_id: &str) -> Result<KeyShare, String> {
        let sealed = std::fs::read(path)
            .map_err(|e| format!("this node holds no share of {key_id}: {e}"))?;
        let share = KeyShare::open(&sealed, &self.config.kek, &self.aad(key_id))
            .map_err(|e| format!("the share of {key_id} cannot be opened: {e}"))?;
        if share.key_id() != key_id {
            return Err(format!(
                "the share stored for {key_id} belongs to another key"
            ));
        }
        Ok(share)
    }

    pub(super) fn pending_path(&self, key_id: &str) -> PathBuf {
        self.share_path(key_id).with_extension("next")
    }

    pub(super) fn share_path(&self, key_id: &str) -> PathBuf {
        self.config.shares_dir.join(format!(
            "{}.share",
            key_id.strip_prefix("sha256:").unwrap_or(key_id)
        ))
    }

    /// Binds a sealed share to its key and to this node: a share file copied to another key's
    /// name or another node does not open.
    pub(super) fn aad(&self, key_id: &str) -> Vec<u8> {
        format!(
            "stella-threshold-share:{key_id}:node-{}",
            self.config.node_id
        )
        .into_bytes()
    }
}

/// The node's share-sealing key: `[threshold] share_key_file`, or `DATA_DIR/threshold/share.key`
/// created (32 random bytes, mode 0600) on first start.
pub fn share_key(path: &std::path::Path) -> Result<[u8; 32], Error> {
    if !path.exists() {
        let mut key = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| Error::Config("no randomness for the share key".into()))?;
        crate::secret_files::write_secret_atomically(path, &key)?;
        tracing::info!(path = %path.display(), "created the threshold share key");
    }
    let bytes = crate::secret_files::read_secret(path)?;
    bytes
        .try_into()
        .map_err(|_| Error::Config(format!("{}: a share key is 32 bytes", path.display())))
}
