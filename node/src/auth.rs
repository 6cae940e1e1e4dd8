//! Caller authentication: bearer tokens mapped to tenants.
//!
//! This is the foundation's authentication: each tenant holds a random bearer token and the
//! node keeps only its SHA-256. The admission milestone replaces it with Authority OpToks bound
//! by DPoP or mTLS; the `Caller` it produces stays the same.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::Error;

/// Who is asking, as established by authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub subject: String,
    pub issuer: String,
}

#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    by_token_hash: HashMap<[u8; 32], String>,
    auditors: HashSet<String>,
}

impl Authenticator {
    /// `tenants`: (tenant id, lowercase hex SHA-256 of its token, may read all audit records).
    pub fn new<'a>(
        tenants: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    ) -> Result<Authenticator, Error> {
        let mut by_token_hash = HashMap::new();
        let mut auditors = HashSet::new();
        for (tenant, hash_hex, auditor) in tenants {
            if auditor {
                auditors.insert(tenant.to_owned());
            }
            let bytes = hex::decode(hash_hex)
                .map_err(|e| Error::Config(format!("tenant {tenant}: {e}")))?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| {
                Error::Config(format!("tenant {tenant}: token hash must be 32 bytes"))
            })?;
            by_token_hash.insert(hash, tenant.to_owned());
        }
        Ok(Authenticator {
            by_token_hash,
            auditors,
        })
    }

    pub fn is_auditor(&self, tenant: &str) -> bool {
        self.auditors.contains(tenant)
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        let Some(value) = authorization else {
            return Err(Error::Unauthenticated(
                "missing Authorization header".into(),
            ));
        };
        let Some(token) = value.strip_prefix("Bearer ").map(str::trim) else {
            return Err(Error::Unauthenticated(
                "the Authorization scheme must be Bearer".into(),
            ));
        };
        if token.is_empty() || token.len() > 4096 {
            return Err(Error::Unauthenticated("malformed bearer token".into()));
        }
        // Lookup by hash: the comparison never touches the token itself, so timing reveals
        // nothing useful about it.
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.by_token_hash.get(&hash) {
            Some(tenant) => Ok(Caller {
                tenant: tenant.clone(),
                subject: format!("token:{}", &hex::encode(hash)[..16]),
                issuer: "static-token".into(),
            }),
            None => Err(Error::Unauthenticated("unknown bearer token".into())),
        }
    }
}

pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_tenants_and_everything_else_is_refused() {
        let hash = token_sha256_hex("s3cret");
        let auth = Authenticator::new([("tenant-a", hash.as_str(), false)]).expect("auth");
        assert_eq!(
            auth.authenticate(Some("Bearer s3cret")).expect("ok").tenant,
            "tenant-a"
        );
        for bad in [
            None,
            Some("Bearer "),
            Some("Basic s3cret"),
            Some("Bearer s3cre"),
            Some("bearer s3cret"),
        ] {
            assert!(
                matches!(auth.authenticate(bad), Err(Error::Unauthenticated(_))),
                "{bad:?}"
            );
        }
    }
}
