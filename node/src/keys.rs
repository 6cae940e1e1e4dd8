//! The node's signing keys. The replicated key registry assigns keys to a tenant and plan
//! (active → retired → revoked); a tenant/plan without registered keys is signed for with the
//! node's default key. Private material stays outside Raft: a file key is
//! `<keys_dir>/<hex of key id>.pem` on every node, a PKCS#11 key is found on the node's token
//! by the label its registry entry names (`source = "pkcs11:<label>"`), a KMS key stays in AWS
//! KMS and is found by the key ARN its entry names (`source = "kms:<key ARN>"`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stella_signer::{FileKeySigner, KeySigner};

use stella_state::command::{KeyEntry, ThresholdGroup};

pub use crate::fallback::{FALLBACK_REMARK, FallbackSigner};
pub use crate::key_registry::{
    Selection, THRESHOLD_SOURCE, registry_source, select, source_kind, valid_source,
};
pub use crate::secret_files::{
    owner_only, read_pin, read_secret, write_atomically, write_secret_atomically,
};

use crate::Error;

/// Where registered keys' private material is found on this node.
#[derive(Debug, Clone, Default)]
pub struct KeyStores {
    pub keys_dir: PathBuf,
    /// Module, token, PIN and session count for `pkcs11:<label>` keys.
    pub pkcs11: Option<stella_signer::pkcs11::Pkcs11Config>,
    /// The AWS KMS client for `kms:<key ARN>` keys (`[signing.kms]`).
    pub kms: Option<Arc<crate::kms::KmsClient>>,
}

pub struct Keyring {
    default: Arc<dyn KeySigner>,
    stores: KeyStores,
    loaded: Mutex<HashMap<String, Arc<dyn KeySigner>>>,
    keyless: Option<Arc<dyn KeySigner>>,
    threshold: Option<crate::threshold::ThresholdBackend>,
}

impl Keyring {
    pub fn single(signer: Arc<dyn KeySigner>) -> Keyring {
        Keyring::new(signer, KeyStores::default())
    }

    pub fn new(default: Arc<dyn KeySigner>, stores: KeyStores) -> Keyring {
        Keyring {
            default,
            stores,
            loaded: Mutex::new(HashMap::new()),
            keyless: None,
            threshold: None,
        }
    }

    /// Signs with threshold keys through `backend` (every clustered node has one).
    pub fn with_threshold(mut self, backend: crate::threshold::ThresholdBackend) -> Keyring {
        self.threshold = Some(backend);
        self
    }

    /// The holders of threshold shares (this node's shard and its peers).
    pub fn threshold(&self) -> Option<&crate::threshold::ThresholdBackend> {
        self.threshold.as_ref()
    }

    /// Offers keyless signing with `signer` (`[signing.keyless]`).
    pub fn with_keyless(mut self, signer: Arc<dyn KeySigner>) -> Keyring {
        self.keyless = Some(signer);
        self
    }

    /// The keyless signer, for requests that ask for `keyless`.
    pub fn keyless(&self) -> Result<Arc<dyn KeySigner>, Error> {
        self.keyless.clone().ok_or_else(|| {
            Error::InvalidRequest("keyless signing is not configured on this signer".into())
        })
    }

    pub fn default_key(&self) -> &Arc<dyn KeySigner> {
        &self.default
    }

    /// The signers for the registry's `selection` for `tenant` on `plan`, in envelope order.
    /// May block (first use of a key reads its file or opens it on the token).
    /// A threshold key's signer signs only for `admission` (the request's reservation id).
    /// With a `standby` key, an active key that cannot be loaded is replaced by it, and every
    /// active key falls back to it when its back-end fails to sign ([`FallbackSigner`]).
    pub fn signers_for(
        &self,
        selection: Selection,
        standby: Option<&KeyEntry>,
        tenant: &str,
        plan: &str,
        admission: &str,
    ) -> Result<Vec<Arc<dyn KeySigner>>, Error> {
        match selection {
            Selection::Default => Ok(vec![self.default.clone()]),
            Selection::Registered(entries) => entries
                .iter()
                .map(|(e, group)| {
                    let active = self.load_with_group(e, group.as_ref(), admission);
                    let Some(standby) = standby else {
                        return active;
                    };
                    Ok(match (active, self.load(standby)) {
                        (Ok(active), Ok(standby)) => {
                            Arc::new(FallbackSigner { active, standby }) as Arc<dyn KeySigner>
                        }
                        // A standby that cannot be used never stops the active key.
                        (Ok(active), Err(why)) => {
                            tracing::warn!(standby = %standby.key_id, "the standby key cannot be loaded: {why}");
                            active
                        }
                        (Err(Error::Unavailable(why)), Ok(standby)) => {
                            Arc::new(FallbackSigner::already_failed(&e.key_id, &why, standby))
                        }
                        (Err(e), _) => return Err(e),
                    })
                })
                .collect(),
            Selection::NoActiveKey => Err(Error::Unavailable(format!(
                "tenant `{tenant}` has no active key for plan `{plan}` (rotated out or revoked)"
            ))),
        }
    }

    /// The private key behind a registry entry, loaded once and checked against the entry.
    pub fn load(&self, entry: &KeyEntry) -> Result<Arc<dyn KeySigner>, Error> {
        self.load_with_group(entry, None, "")
    }

    /// As [`Keyring::load`]; a threshold key needs its group (holders and verifying shares).
    pub fn load_with_group(
        &self,
        entry: &KeyEntry,
        group: Option<&ThresholdGroup>,
        admission: &str,
    ) -> Result<Arc<dyn KeySigner>, Error> {
        // A threshold key's group changes with a refresh (new verifying shares, maybe fewer
        // holders): its signer is built from the registry's current group every time, never
        // cached — it holds no secret, only public material.
        if entry.source == THRESHOLD_SOURCE {
            let (Some(backend), Some(group)) = (&self.threshold, group) else {
                return Err(Error::Unavailable(format!(
                    "threshold key {} needs a clustered node and its share holders",
                    entry.key_id
                )));
            };
            return backend.signer(group, admission).map_err(Error::Unavailable);
        }
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(signer) = loaded.get(&entry.key_id) {
            return Ok(signer.clone());
        }
        let signer: Arc<dyn KeySigner> = match entry.source.split_once(':') {
            Some(("pkcs11", label)) => {
                let config = self.stores.pkcs11.as_ref().ok_or_else(|| {
                    Error::Unavailable(
                        "this node has no [signing.pkcs11] token for HSM keys".into(),
                    )
                })?;
                let config = stella_signer::pkcs11::Pkcs11Config {
                    key_label: label.to_owned(),
                    ..config.clone()
                };
                Arc::new(
                    stella_signer::pkcs11::Pkcs11KeySigner::open(&config, false)
                        .map_err(|e| Error::Unavailable(e.to_string()))?,
                )
            }
            Some(("kms", key)) => {
                // A network call (up to the KMS bound): made without the lock, so an
                // unreachable KMS never holds up the other keys' signings.
                drop(loaded);
                let signer = self
                    .open_kms_key(key)
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                loaded = self
                    .loaded
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                signer
            }
            _ => Arc::new(
                load_file_key(&key_path(&self.stores.keys_dir, &entry.key_id))
                    .map_err(|e| Error::Unavailable(format!("key {}: {e}", entry.key_id)))?,
            ),
        };
        if signer.descriptor().key_id != entry.key_id {
            return Err(Error::Unavailable(format!(
                "the private key found for {} is another key ({})",
                entry.key_id,
                signer.descriptor().key_id
            )));
        }
        loaded.insert(entry.key_id.clone(), signer.clone());
        Ok(signer)
    }
}

impl Keyring {
    /// Opens a KMS key by its reference (one `GetPublicKey` call; blocks): what a registration
    /// does before it knows the key id. The signer is kept for the signings that follow.
    pub fn open_kms(&self, key: &str) -> Result<Arc<dyn KeySigner>, crate::kms::KmsError> {
        let signer = self.open_kms_key(key)?;
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(signer.descriptor().key_id.clone(), signer.clone());
        Ok(signer)
    }

    fn open_kms_key(&self, key: &str) -> Result<Arc<dyn KeySigner>, crate::kms::KmsError> {
        let client = self.stores.kms.clone().ok_or_else(|| {
            crate::kms::KmsError::Refused(
                "this node has no [signing.kms] section for KMS keys".into(),
            )
        })?;
        Ok(Arc::new(crate::kms::KmsKeySigner::open(client, key)?))
    }
}

/// `<keys_dir>/<hex of the key id>.pem`
pub fn key_path(keys_dir: &Path, key_id: &str) -> PathBuf {
    keys_dir.join(format!(
        "{}.pem",
        key_id.strip_prefix("sha256:").unwrap_or(key_id)
    ))
}

/// Where this node finds registered keys: `[signing] keys_dir` (default `DATA_DIR/keys`), the
/// `[signing.pkcs11]` token and the `[signing.kms]` client, if any.
pub fn key_stores(config: &crate::config::Config) -> Result<KeyStores, Error> {
    let pkcs11 = match &config.signing.pkcs11 {
        Some(hsm) => Some(stella_signer::pkcs11::Pkcs11Config {
            module: hsm.module.clone(),
            token_label: hsm.token_label.clone(),
            pin: read_pin(&hsm.pin_file)?,
            key_label: hsm.key_label.clone(),
            max_sessions: hsm.max_sessions,
        }),
        None => None,
    };
    let kms = match &config.signing.kms {
        Some(section) => {
            let settings = section.settings().map_err(Error::Config)?;
            Some(
                crate::kms::KmsClient::connect(settings)
                    .map_err(|e| Error::Config(format!("[signing.kms]: {e}")))?,
            )
        }
        None => None,
    };
    Ok(KeyStores {
        kms,
        keys_dir: config
            .signing
            .keys_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("keys")),
        pkcs11,
    })
}

/// The node's signing key from `[signing]`: a key file (created in dev mode) or a PKCS#11 key.
pub fn load_signing_key(
    config: &crate::config::SigningConfig,
    dev: bool,
) -> Result<Arc<dyn KeySigner>, Error> {
    if let Some(hsm) = &config.pkcs11 {
        let pin = read_pin(&hsm.pin_file)?;
        let signer = stella_signer::pkcs11::Pkcs11KeySigner::open(
            &stella_signer::pkcs11::Pkcs11Config {
                module: hsm.module.clone(),
                token_label: hsm.token_label.clone(),
                pin,
                key_label: hsm.key_label.clone(),
                max_sessions: hsm.max_sessions,
            },
            hsm.create,
        )
        .map_err(|e| Error::Key(e.to_string()))?;
        tracing::info!(key_id = %signer.descriptor().key_id, token = %hsm.token_label, "PKCS#11 signing key ready");
        return Ok(Arc::new(signer));
    }
    let path = config.key_file.as_deref().ok_or_else(|| {
        Error::Config("[signing] key_file or [signing.pkcs11] is required".into())
    })?;
    if dev {
        let (key, created) = load_or_create_file_key(path)?;
        if created {
            tracing::info!(key_id = %key.descriptor().key_id, path = %path.display(), "created dev signing key");
        }
        return Ok(Arc::new(key));
    }
    Ok(Arc::new(load_file_key(path)?))
}

/// Loads a PKCS#8 PEM key file.
pub fn load_file_key(path: &Path) -> Result<FileKeySigner, Error> {
    owner_only(path)?;
    FileKeySigner::from_pem_file(path).map_err(|e| Error::Key(e.to_string()))
}

/// Loads the key at `path`, creating it (mode 0600, written atomically and fsynced) when absent.
pub fn load_or_create_file_key(path: &Path) -> Result<(FileKeySigner, bool), Error> {
    if path.exists() {
        return Ok((load_file_key(path)?, false));
    }
    let key = FileKeySigner::generate().map_err(|e| Error::Key(e.to_string()))?;
    write_secret_atomically(path, key.to_pkcs8_pem().as_bytes())?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_secret_others_could_read_or_replace_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("signing.pem");
        let key = FileKeySigner::generate().expect("key");
        write_secret_atomically(&path, key.to_pkcs8_pem().as_bytes()).expect("write");
        assert!(load_file_key(&path).is_ok(), "0600 is fine");
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let err = load_file_key(&path)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
            assert!(read_secret(&path).is_err());
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(
            read_secret(&path).is_ok(),
            "read-only for the owner is fine"
        );
    }
    use super::*;
    use stella_state::State;
    use stella_state::command::KeyState;

    fn entry(id: &str, tenant: &str, plan: &str, state: KeyState, created_ms: u64) -> KeyEntry {
        KeyEntry {
            key_id: id.into(),
            owner_tenant: tenant.into(),
            plan: plan.into(),
            source: "file".into(),
            algorithm: "ECDSA_P256_SHA256".into(),
            public_key_pem: String::new(),
            state,
            created_ms,
            updated_ms: created_ms,
            reason: String::new(),
        }
    }

    #[test]
    fn registry_sources_name_a_back_end_and_a_locator() {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(registry_source("file", None).as_deref(), Some("file"));
        assert_eq!(
            registry_source("pkcs11", Some("hsm-key")).as_deref(),
            Some("pkcs11:hsm-key")
        );
        assert_eq!(
            registry_source("kms", Some(arn)),
            Some(format!("kms:{arn}"))
        );
        for (kind, locator) in [
            ("file", Some("x")),
            ("pkcs11", None),
            ("pkcs11", Some("")),
            ("kms", None),
            ("kms", Some("two words")),
            ("gcp", Some("k")),
        ] {
            assert_eq!(registry_source(kind, locator), None, "{kind} {locator:?}");
        }
        for ok in ["file", "pkcs11:a:b", &format!("kms:{arn}")] {
            assert!(valid_source(ok), "{ok}");
        }
        for bad in [
            "",
            "file:x",
            "pkcs11:",
            "kms:",
            "kms:a b",
            "threshold:x",
            "other",
        ] {
            assert!(!valid_source(bad), "{bad}");
        }
        assert_eq!(source_kind(&format!("kms:{arn}")), "kms");
    }

    #[test]
    fn keys_are_chosen_per_tenant_and_plan_without_fallback() {
        let mut state = State::default();
        for e in [
            entry("a-old", "a", "team", KeyState::Retired, 1),
            entry("a-hsm", "a", "team", KeyState::Active, 3),
            entry("a-file", "a", "team", KeyState::Active, 2),
            entry("a-gold", "a", "gold", KeyState::Revoked, 4),
            entry("b-1", "b", "team", KeyState::Active, 5),
        ] {
            state.keys.insert(e.key_id.clone(), e);
        }
        let ids = |s: Selection| match s {
            Selection::Registered(keys) => {
                keys.into_iter().map(|(k, _)| k.key_id).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ids(select(&state, "a", "team")),
            ["a-file", "a-hsm"],
            "all active, oldest first"
        );
        assert_eq!(ids(select(&state, "b", "team")), ["b-1"]);
        assert_eq!(
            select(&state, "a", "gold"),
            Selection::NoActiveKey,
            "revoked: no fallback"
        );
        assert_eq!(select(&state, "c", "team"), Selection::Default);
        assert_eq!(select(&state, "b", "gold"), Selection::Default);
    }
}
