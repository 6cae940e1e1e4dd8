//! Standby keys at signing time (ADR 0022): [`FallbackSigner`] puts a tenant/plan's standby key
//! behind an active key, for the moments the active key's back-end fails.

use std::sync::Arc;

use stella_signer::KeySigner;

/// An active key with the tenant/plan's standby behind it: when the active key's back-end
/// fails to sign (an HSM or KMS that is down), the standby signs instead and the operation
/// says so in a remark starting with [`FALLBACK_REMARK`], which the audit record files as key
/// source `fallback`. It never signs with the standby otherwise.
pub struct FallbackSigner {
    pub(crate) active: Arc<dyn KeySigner>,
    pub(crate) standby: Arc<dyn KeySigner>,
}

/// How a fallback signature's remark starts.
pub const FALLBACK_REMARK: &str = "fallback:";

/// The active key could not even be loaded: it signs with the standby every time.
struct Unloadable {
    descriptor: stella_signer::KeyDescriptor,
    why: String,
}

impl KeySigner for Unloadable {
    fn descriptor(&self) -> &stella_signer::KeyDescriptor {
        &self.descriptor
    }

    fn sign(
        &self,
        _message: &[u8],
    ) -> Result<stella_signer::SignedOperation, stella_signer::Error> {
        Err(stella_signer::Error::Key(self.why.clone()))
    }
}

impl FallbackSigner {
    /// For an active key that could not be loaded (its back-end is unreachable): every
    /// signature comes from the standby.
    pub(crate) fn already_failed(
        key_id: &str,
        why: &str,
        standby: Arc<dyn KeySigner>,
    ) -> FallbackSigner {
        let mut descriptor = standby.descriptor().clone();
        descriptor.key_id = key_id.to_owned();
        FallbackSigner {
            active: Arc::new(Unloadable {
                descriptor,
                why: why.to_owned(),
            }),
            standby,
        }
    }
}

impl KeySigner for FallbackSigner {
    fn descriptor(&self) -> &stella_signer::KeyDescriptor {
        self.active.descriptor()
    }

    fn sign(&self, message: &[u8]) -> Result<stella_signer::SignedOperation, stella_signer::Error> {
        let failure = match self.active.sign(message) {
            Ok(op) => return Ok(op),
            Err(e) => e,
        };
        let active = &self.active.descriptor().key_id;
        let mut op = self.standby.sign(message).map_err(|e| {
            stella_signer::Error::Signing(format!(
                "active key {active} failed ({failure}) and so did the standby ({e})"
            ))
        })?;
        let remark = format!(
            "{FALLBACK_REMARK} standby key {} signed because active key {active} is unavailable: {failure}",
            op.key_id
        );
        tracing::warn!("{remark}");
        op.remarks.push(remark);
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_signer::FileKeySigner;

    fn broken(id: &str) -> Arc<dyn KeySigner> {
        let mut descriptor = FileKeySigner::generate().expect("key").descriptor().clone();
        descriptor.key_id = id.to_owned();
        Arc::new(Unloadable {
            descriptor,
            why: "the token is unreachable".into(),
        })
    }

    #[test]
    fn the_standby_signs_only_when_the_active_key_fails() {
        let active: Arc<dyn KeySigner> = Arc::new(FileKeySigner::generate().expect("key"));
        let standby: Arc<dyn KeySigner> = Arc::new(FileKeySigner::generate().expect("key"));
        let healthy = FallbackSigner {
            active: active.clone(),
            standby: standby.clone(),
        };
        let op = healthy.sign(b"pae").expect("signs");
        assert_eq!(op.key_id, active.descriptor().key_id);
        assert!(
            op.remarks.is_empty(),
            "no fallback while the active key signs"
        );

        let failing = FallbackSigner {
            active: broken("sha256:active"),
            standby: standby.clone(),
        };
        assert_eq!(failing.descriptor().key_id, "sha256:active");
        let op = failing.sign(b"pae").expect("the standby signs");
        assert_eq!(op.key_id, standby.descriptor().key_id);
        assert!(
            standby
                .descriptor()
                .public_key
                .verify(b"pae", &op.signature)
        );
        let [remark] = op.remarks.as_slice() else {
            panic!("one remark: {:?}", op.remarks);
        };
        assert!(remark.starts_with(FALLBACK_REMARK), "{remark}");
        assert!(remark.contains("sha256:active") && remark.contains("unreachable"));

        let both = FallbackSigner {
            active: broken("sha256:active"),
            standby: broken("sha256:standby"),
        };
        let e = both.sign(b"pae").expect_err("nothing signs");
        assert!(e.to_string().contains("so did the standby"), "{e}");
    }
}
