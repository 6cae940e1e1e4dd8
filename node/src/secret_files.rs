//! Secret files on the node's disk: owner-only checks on read, atomic fsynced writes. Split out
//! of `keys` so that every module keeping a secret (key shards, dev credentials, licences) can
//! use them without depending on the keyring.

use std::io::Write;
use std::path::Path;

use crate::Error;

/// Refuses a secret file (private key, PIN, share key, shared secret) that anyone but its owner
/// may read or write, as ssh does with private keys: a node never uses a secret that other
/// accounts on the host could have copied or replaced.
pub fn owner_only(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} may be read or written by group or others (mode {mode:03o}): `chmod 600` it",
            path.display()
        )));
    }
    Ok(())
}

/// The PKCS#11 PIN from an owner-only file (trimmed; wiped from memory when dropped).
pub fn read_pin(path: &Path) -> Result<zeroize::Zeroizing<String>, Error> {
    let bytes = zeroize::Zeroizing::new(read_secret(path)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Config(format!("{}: the PIN is not UTF-8", path.display())))?;
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

/// A secret file's contents, once [`owner_only`] says only its owner can read it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, Error> {
    owner_only(path)?;
    std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))
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
