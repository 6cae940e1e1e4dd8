//! The node's signing keys. For now one file key signs for every tenant; per-tenant/plan keys
//! and other back-ends (HSM, keyless, threshold) plug in behind the same `KeySigner` trait.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use stella_signer::{FileKeySigner, KeySigner};

use crate::Error;

#[derive(Clone)]
pub struct Keyring {
    default: Arc<dyn KeySigner>,
}

impl Keyring {
    pub fn single(signer: Arc<dyn KeySigner>) -> Keyring {
        Keyring { default: signer }
    }

    /// The signers for `tenant`, in envelope order.
    pub fn signers_for(&self, _tenant: &str) -> Vec<Arc<dyn KeySigner>> {
        vec![self.default.clone()]
    }
}

/// The node's signing key from `[signing]`: a key file (created in dev mode) or a PKCS#11 key.
pub fn load_signing_key(
    config: &crate::config::SigningConfig,
    dev: bool,
) -> Result<Arc<dyn KeySigner>, Error> {
    if let Some(hsm) = &config.pkcs11 {
        let pin = std::fs::read_to_string(&hsm.pin_file)
            .map_err(Error::io(format!("reading {}", hsm.pin_file.display())))?;
        let signer = stella_signer::pkcs11::Pkcs11KeySigner::open(
            &stella_signer::pkcs11::Pkcs11Config {
                module: hsm.module.clone(),
                token_label: hsm.token_label.clone(),
                pin: pin.trim().to_owned(),
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

/// Writes `bytes` to `path` via a temp file + rename, with owner-only permissions, and fsyncs
/// the file and its directory so a crash never leaves a half-written secret.
pub fn write_secret_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomically(path, bytes, 0o600)
}

pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Config(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io(format!("creating {}", tmp.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(Error::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("renaming to {}", path.display())))?;
    fsync_dir(dir)
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("fsync of directory {}", dir.display())))
}
