//! OpTok validation: a JWT from the configured Authority, checked without I/O (the key comes
//! from the JWKS cache, the time from the node's clock).

use jsonwebtoken::Header;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::jose::{self, JoseError};

pub const SCOPE_SIGN: &str = "signer.sign";
pub const SCOPE_AUDIT: &str = "signer.audit";
/// Read every tenant's audit records (the Attestor).
pub const SCOPE_AUDIT_ALL: &str = "signer.audit.all";
/// Operator actions (the PoE emergency bypass).
pub const SCOPE_ADMIN: &str = "signer.admin";

#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`, in seconds.
    pub skew_seconds: i64,
    /// Longest accepted lifetime (`exp - iat`): a token minted for a year is refused.
    pub max_lifetime_seconds: i64,
}

/// How the token is bound to its holder (RFC 9449 `cnf.jkt` or RFC 8705 `cnf.x5t#S256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    Dpop { jkt: String },
    Mtls { x5t_s256: String },
}

/// A verified OpTok.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTok {
    pub issuer: String,
    pub subject: String,
    pub tenant: String,
    pub scopes: Vec<String>,
    /// The plan the Authority states for this caller, if any (must agree with the PoE).
    pub plan: Option<String>,
    pub jti: String,
    pub expires_at: i64,
    pub binding: Binding,
    /// The installation the Authority issued the token to (`inst`), if it says: the PoE must
    /// then be bound to the same installation.
    pub installation: Option<String>,
}

impl OpTok {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Jose(#[from] JoseError),
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    #[error("the token header has no `kid`")]
    NoKeyId,
    #[error("token type `{0}` is not an access token")]
    Type(String),
    #[error("claims: {0}")]
    Claims(String),
    #[error("wrong issuer `{0}`")]
    Issuer(String),
    #[error("wrong audience")]
    Audience,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token lives longer than allowed")]
    Lifetime,
    #[error("the token lacks scope `{0}`")]
    Scope(String),
    #[error("the token is not sender-constrained (no cnf.jkt or cnf.x5t#S256)")]
    Unbound,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Confirmation {
    jkt: Option<String>,
    #[serde(rename = "x5t#S256")]
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    nbf: Option<i64>,
    iat: i64,
    jti: String,
    #[serde(default)]
    scope: String,
    tid: String,
    plan: Option<String>,
    cnf: Option<Confirmation>,
    inst: Option<String>,
}

/// Header of a presented token, with the `kid` the key lookup needs.
pub fn parse_header(token: &str) -> Result<(Header, String), TokenError> {
    let header = jose::header(token)?;
    if let Some(typ) = header.typ.as_deref()
        && !typ.eq_ignore_ascii_case("at+jwt")
        && !typ.eq_ignore_ascii_case("jwt")
    {
        // A DPoP proof (or any other JWT) presented as a token.
        return Err(TokenError::Type(typ.to_owned()));
    }
    let kid = header.kid.clone().ok_or(TokenError::NoKeyId)?;
    Ok((header, kid))
}

/// Verifies signature and claims. `now` is Unix seconds from the node's clock.
pub fn verify(
    token: &str,
    header: &Header,
    key: &Jwk,
    policy: &TokenPolicy,
    now: i64,
) -> Result<OpTok, TokenError> {
    let claims = jose::verify(token, header, key)?;
    let claims: Claims =
        serde_json::from_value(claims).map_err(|e| TokenError::Claims(e.to_string()))?;
    if claims.iss != policy.issuer {
        return Err(TokenError::Issuer(claims.iss));
    }
    let audience_ok = match &claims.aud {
        Audience::One(a) => *a == policy.audience,
        Audience::Many(all) => all.contains(&policy.audience),
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    let skew = policy.skew_seconds;
    if now >= claims.exp.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if now.saturating_add(skew) < claims.iat {
        return Err(TokenError::IssuedInFuture);
    }
    if claims.exp.saturating_sub(claims.iat) > policy.max_lifetime_seconds {
        return Err(TokenError::Lifetime);
    }
    if claims.sub.is_empty() || claims.tid.is_empty() || claims.jti.is_empty() {
        return Err(TokenError::Claims(
            "`sub`, `tid` and `jti` must not be empty".into(),
        ));
    }
    let binding = match claims.cnf {
        Some(Confirmation { jkt: Some(jkt), .. }) => Binding::Dpop { jkt },
        Some(Confirmation {
            x5t_s256: Some(x5t_s256),
            ..
        }) => Binding::Mtls { x5t_s256 },
        _ => return Err(TokenError::Unbound),
    };
    Ok(OpTok {
        issuer: claims.iss,
        subject: claims.sub,
        tenant: claims.tid,
        scopes: claims
            .scope
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect(),
        plan: claims.plan,
        jti: claims.jti,
        expires_at: claims.exp,
        binding,
        installation: claims.inst.filter(|i| !i.is_empty()),
    })
}
