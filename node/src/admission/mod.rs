//! Admission: who is asking (OpTok), is the token theirs (DPoP or mTLS), are they entitled
//! (PoE), and which plan's quota applies. Quota itself is enforced on the leader through the
//! Raft ledger (`signing.rs`), together with the cluster-wide claim of the DPoP proof.
//!
//! The checks are pure functions (`optok`, `dpop`, `decide`) fed by three I/O parts: the JWKS
//! cache, the entitlement-cache actor (licensing introspection) and the replicated bypass
//! toggle. See `docs/admission.md`.

pub mod dpop;
pub mod entitlement;
pub mod fuzzing;
pub mod jose;
pub mod jwks;
pub mod licensing;
pub mod optok;
mod poe;
pub mod preauth;
pub mod provenance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stella_api::ProofOfEntitlement;

use self::dpop::{NonceIssuer, Proof, ProofPolicy, ProofTarget};
use self::entitlement::{EntitlementCache, Freshness, Lookup};
use self::jwks::{JwksCache, JwksError};
use self::licensing::Poe;
use self::optok::{Binding, OpTok, TokenPolicy};
use self::preauth::{PreAuth, PreAuthPolicy, PreAuthSummary};
use crate::Error;
use crate::clock::Clock;
use crate::config::PlanConfig;
pub(crate) use poe::check_poe_shape;
pub use poe::decide;

/// The replicated toggle that switches PoE checks off in an emergency.
pub const BYPASS_TOGGLE: &str = "poe.bypass";

/// Who is asking, as established by admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub subject: String,
    pub issuer: String,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What the HTTP edge knows about a request before its body is read.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub method: String,
    /// Every URL the client may have addressed (this node's and the load balancer's), no query.
    pub urls: Vec<String>,
    /// Every `Authorization` header value (more than one is an error).
    pub authorization: Vec<String>,
    /// Every `DPoP` header value (more than one is an error).
    pub dpop: Vec<String>,
    /// Every `Idempotency-Key` header value (more than one is an error).
    pub idempotency_key: Vec<String>,
    /// base64url SHA-256 of the client certificate presented on this connection (mTLS).
    pub client_cert_sha256: Option<String>,
    /// The address the connection came from (the load balancer's, behind one).
    pub source: Option<std::net::IpAddr>,
}

/// An authentication that failed; `caller` is set when the token itself verified (the binding,
/// scope or proof failed), so the refusal can be attributed and audited on its own.
#[derive(Debug)]
pub struct AuthFailure {
    pub error: Error,
    pub caller: Option<Caller>,
}

impl From<AuthFailure> for Error {
    fn from(f: AuthFailure) -> Error {
        f.error
    }
}

/// A caller whose token and binding checked out.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub token: OpTok,
    /// The DPoP proof, for DPoP-bound tokens: its `jti` still has to be claimed.
    pub proof: Option<Proof>,
}

/// PoE states recorded in the audit log.
pub const POE_VALID: &str = "valid";
pub const POE_STALE: &str = "stale";
pub const POE_BYPASSED: &str = "bypassed";

/// An entitled caller: the plan whose quota applies and how the entitlement was established.
#[derive(Debug, Clone)]
pub struct Entitled {
    pub plan: PlanConfig,
    pub poe_state: &'static str,
    pub license_id: Option<String>,
}

pub struct AdmissionParts {
    pub token_policy: TokenPolicy,
    pub proof_policy: ProofPolicy,
    pub jwks: JwksCache,
    pub nonces: Option<NonceIssuer>,
    pub entitlements: EntitlementCache,
    pub plans: Vec<PlanConfig>,
    pub bypass_plan: String,
    pub clock: Arc<dyn Clock>,
    pub preauth: PreAuthPolicy,
    /// Tenants whose tokens may use `signer.audit.all` (read every tenant's records); the
    /// scope is ignored in anyone else's token.
    pub auditor_tenants: Vec<String>,
}

pub struct Admission {
    parts: AdmissionParts,
    /// Proofs seen by this node (reads; signing claims proofs cluster-wide through Raft).
    local_proofs: Mutex<HashMap<String, i64>>,
    /// Tokens whose signature and claims checked out, by SHA-256 of the token, for at most
    /// `TOKEN_CACHE_SECONDS`: a caller reuses its token for many requests, and the ES256
    /// verification is the costliest step of admission. Times are re-checked on every hit.
    verified_tokens: Mutex<HashMap<[u8; 32], (OpTok, i64)>>,
    /// Refusals before the caller is known: counted per source, and limited.
    preauth: PreAuth,
}

/// How long a verified token is trusted without verifying its signature again (a key the
/// Authority withdraws stops working within this time).
const TOKEN_CACHE_SECONDS: i64 = 60;
const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl Admission {
    pub fn new(parts: AdmissionParts) -> Admission {
        Admission {
            preauth: PreAuth::new(parts.preauth),
            parts,
            local_proofs: Mutex::new(HashMap::new()),
            verified_tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn proof_policy(&self) -> &ProofPolicy {
        &self.parts.proof_policy
    }

    /// How long the outcome of an `Idempotency-Key` is kept: a DPoP proof's validity window.
    pub fn idempotency_window_ms(&self) -> u64 {
        let policy = &self.parts.proof_policy;
        u64::try_from(
            policy
                .max_age_seconds
                .saturating_add(policy.skew_seconds)
                .max(1),
        )
        .unwrap_or(1)
        .saturating_mul(1000)
    }

    pub fn now(&self) -> i64 {
        self.parts.clock.now().unix_timestamp()
    }

    pub fn stop(&self) {
        self.parts.entitlements.stop();
    }

    /// Readiness: the Authority's keys are loaded (fetched now if they never were).
    pub async fn trust_loaded(&self) -> Result<(), String> {
        self.parts.jwks.check_loaded().await
    }

    pub fn entitlement_health(&self) -> crate::supervise::ActorHealth {
        self.parts.entitlements.health()
    }

    /// Verifies the OpTok and its sender binding; `scopes`: the token needs one of them.
    pub async fn authenticate(
        &self,
        facts: &RequestFacts,
        scopes: &[&str],
    ) -> Result<Authenticated, Error> {
        Ok(self.authenticate_detailed(facts, scopes).await?)
    }

    /// Verifies credentials again, away from any client connection (a threshold share holder
    /// re-checking an admission): the same checks as [`Admission::authenticate`], without the
    /// per-source budget or the pre-authentication tally, and without claiming the proof.
    pub async fn verify_credentials(
        &self,
        facts: &RequestFacts,
        scopes: &[&str],
    ) -> Result<Authenticated, Error> {
        self.authenticate_inner(facts, scopes)
            .await
            .map_err(|failure| failure.error)
    }

    /// [`Admission::authenticate`], saying whether the token verified when it fails. A source
    /// over its budget of failures is refused before any verification work unless its
    /// credential could be an honest caller's (behind a load balancer every caller shares one
    /// source address); failures before the token verified are counted in the
    /// pre-authentication tally (see `preauth`).
    pub async fn authenticate_detailed(
        &self,
        facts: &RequestFacts,
        scopes: &[&str],
    ) -> Result<Authenticated, AuthFailure> {
        let now_ms = self.parts.clock.now_ms();
        if let Some(retry_after_seconds) = self.preauth.over_budget(facts.source, now_ms)
            && !self.may_be_honest(facts)
        {
            self.preauth.rate_limited(facts.source, now_ms);
            metrics::counter!(crate::telemetry::PREAUTH_REFUSALS, "code" => "rate_limited")
                .increment(1);
            return Err(AuthFailure {
                error: Error::RateLimited {
                    retry_after_seconds,
                },
                caller: None,
            });
        }
        let result = self.authenticate_inner(facts, scopes).await;
        if let Err(failure) = &result
            && failure.caller.is_none()
        {
            if matches!(failure.error, Error::Unavailable(_)) {
                self.preauth.unavailable(facts.source, now_ms);
            } else {
                let code = failure.error.code().as_str();
                self.preauth.refused(facts.source, code, now_ms);
                metrics::counter!(crate::telemetry::PREAUTH_REFUSALS, "code" => code).increment(1);
            }
        }
        result
    }

    /// The pre-authentication refusals counted since the last call (one audit record's worth).
    pub fn take_preauth_summary(&self) -> Option<PreAuthSummary> {
        self.preauth.take_summary(self.parts.clock.now_ms())
    }

    /// Whether the request's credential could be an honest caller's, judged without any
    /// signature check: a token this node verified recently, or one signed (it claims) under a
    /// key the Authority publishes. Garbage, other schemes and unknown key ids cannot be.
    fn may_be_honest(&self, facts: &RequestFacts) -> bool {
        use sha2::Digest;
        let Ok((_, raw_token)) = split_authorization(&facts.authorization) else {
            return false;
        };
        let digest: [u8; 32] = sha2::Sha256::digest(raw_token.as_bytes()).into();
        if self.lock_tokens().contains_key(&digest) {
            return true;
        }
        optok::parse_header(raw_token).is_ok_and(|(_, kid)| self.parts.jwks.knows(&kid))
    }

    async fn authenticate_inner(
        &self,
        facts: &RequestFacts,
        scopes: &[&str],
    ) -> Result<Authenticated, AuthFailure> {
        let unknown = |error: Error| AuthFailure {
            error,
            caller: None,
        };
        let (scheme, raw_token) = split_authorization(&facts.authorization).map_err(unknown)?;
        let now = self.now();
        let mut token = self.verify_token(raw_token, now).await.map_err(unknown)?;
        // Reading every tenant's records is for configured auditors only, whatever the
        // Authority put in the token.
        if !self.parts.auditor_tenants.contains(&token.tenant) {
            token.scopes.retain(|s| s != optok::SCOPE_AUDIT_ALL);
        }
        let caller = Caller {
            tenant: token.tenant.clone(),
            subject: token.subject.clone(),
            issuer: token.issuer.clone(),
            scopes: token.scopes.clone(),
        };
        match self.bind(facts, scopes, &token, scheme, raw_token, now) {
            Ok(proof) => Ok(Authenticated {
                caller,
                token,
                proof,
            }),
            Err(error) => Err(AuthFailure {
                error,
                caller: Some(caller),
            }),
        }
    }

    /// Scope and sender binding of a verified token: the DPoP proof, or the mTLS certificate.
    fn bind(
        &self,
        facts: &RequestFacts,
        scopes: &[&str],
        token: &OpTok,
        scheme: Scheme,
        raw_token: &str,
        now: i64,
    ) -> Result<Option<Proof>, Error> {
        if !scopes.iter().any(|s| token.has_scope(s)) {
            return Err(Error::Unauthenticated(format!(
                "the token lacks scope `{}`",
                scopes.join("` or `")
            )));
        }
        let proof = match (&token.binding, scheme) {
            (Binding::Dpop { jkt }, Scheme::Dpop) => {
                let proof = self.verify_proof(facts, raw_token, now)?;
                if proof.jkt != *jkt {
                    return Err(Error::Unauthenticated(
                        "DPoP proof key does not match the token's cnf.jkt".into(),
                    ));
                }
                Some(proof)
            }
            (Binding::Dpop { .. }, Scheme::Bearer) => {
                return Err(Error::Unauthenticated(
                    "a DPoP-bound token must be sent with the DPoP scheme and a proof".into(),
                ));
            }
            (Binding::Mtls { x5t_s256 }, _) => {
                match facts.client_cert_sha256.as_deref() {
                    Some(presented) if presented == x5t_s256 => {}
                    Some(_) => {
                        return Err(Error::Unauthenticated(
                            "the client certificate does not match the token's cnf.x5t#S256".into(),
                        ));
                    }
                    None => {
                        return Err(Error::Unauthenticated(
                            "the token is bound to a client certificate; none was presented".into(),
                        ));
                    }
                }
                None
            }
        };
        Ok(proof)
    }

    /// The token's verified claims, from the cache or by full verification.
    async fn verify_token(&self, raw_token: &str, now: i64) -> Result<OpTok, Error> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(raw_token.as_bytes()).into();
        let cached = self
            .lock_tokens()
            .get(&digest)
            .filter(|(_, until)| now < *until)
            .map(|(token, _)| token.clone());
        if let Some(token) = cached {
            // Signature and static claims were checked; time moves on.
            if now
                >= token
                    .expires_at
                    .saturating_add(self.parts.token_policy.skew_seconds)
            {
                return Err(token_error(optok::TokenError::Expired));
            }
            return Ok(token);
        }
        let (header, kid) = optok::parse_header(raw_token).map_err(token_error)?;
        let key = self.parts.jwks.key(&kid).await.map_err(|e| match e {
            JwksError::UnknownKey(_) => Error::Unauthenticated(e.to_string()),
            JwksError::Unavailable(_) => Error::Unavailable(e.to_string()),
        })?;
        let token = optok::verify(raw_token, &header, &key, &self.parts.token_policy, now)
            .map_err(token_error)?;
        let mut cache = self.lock_tokens();
        if cache.len() >= TOKEN_CACHE_ENTRIES {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(digest, (token.clone(), now + TOKEN_CACHE_SECONDS));
        Ok(token)
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (OpTok, i64)>> {
        self.verified_tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn verify_proof(&self, facts: &RequestFacts, token: &str, now: i64) -> Result<Proof, Error> {
        let proof_jwt = match facts.dpop.as_slice() {
            [one] => one,
            [] => return Err(Error::Unauthenticated("missing DPoP proof header".into())),
            _ => return Err(Error::Unauthenticated("more than one DPoP header".into())),
        };
        let target = ProofTarget {
            method: &facts.method,
            urls: &facts.urls,
            access_token: Some(token),
        };
        let proof = dpop::verify(proof_jwt, &target, &self.parts.proof_policy, now)
            .map_err(|e| Error::Unauthenticated(e.to_string()))?;
        if let Some(nonces) = &self.parts.nonces {
            let valid = proof
                .nonce
                .as_deref()
                .is_some_and(|n| nonces.is_valid(n, now));
            if !valid {
                return Err(Error::DpopNonce(nonces.issue(now)));
            }
        }
        Ok(proof)
    }

    /// A DPoP proof may be used once. For reads this node's memory decides; signing claims the
    /// proof in the replicated set instead (so a replay on another node is caught too).
    pub fn claim_locally(&self, proof: &Proof) -> Result<(), Error> {
        let now = self.now();
        let mut seen = self
            .local_proofs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() > 100_000 {
            seen.retain(|_, until| *until > now);
        }
        let until = proof.replay_window_end(&self.parts.proof_policy);
        match seen.insert(proof.replay_key(), until) {
            Some(previous) if previous > now => Err(Error::Unauthenticated(
                "DPoP proof replayed (its jti was seen before)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Establishes the entitlement and the plan. `bypass_on` is the replicated toggle's value.
    pub async fn entitle(
        &self,
        authn: &Authenticated,
        poe: Option<&ProofOfEntitlement>,
        client_cert_sha256: Option<&str>,
        bypass_on: bool,
    ) -> Result<Entitled, Error> {
        if bypass_on {
            let plan = self.plan(&self.parts.bypass_plan)?;
            return Ok(Entitled {
                plan,
                poe_state: POE_BYPASSED,
                license_id: None,
            });
        }
        let poe = poe.ok_or_else(|| {
            Error::EntitlementDenied("the request carries no proof of entitlement (`poe`)".into())
        })?;
        let poe = Poe {
            format: poe.format.clone(),
            value: poe.value.clone(),
        };
        check_poe_shape(&poe, client_cert_sha256)?;
        let (introspection, freshness) = match self.parts.entitlements.lookup(poe).await {
            Lookup::Known(answer, freshness) => (answer, freshness),
            Lookup::Unavailable(e) => {
                return Err(Error::EntitlementDenied(format!(
                    "entitlement cannot be established (licensing unavailable past the grace window): {e}"
                )));
            }
        };
        let plan_name = decide(&introspection, &authn.token, self.now())?;
        Ok(Entitled {
            plan: self.plan(&plan_name)?,
            poe_state: match freshness {
                Freshness::Fresh => POE_VALID,
                Freshness::Stale => POE_STALE,
            },
            license_id: introspection.license_id,
        })
    }

    /// The plans this signer offers (their limits).
    pub fn plans(&self) -> &[PlanConfig] {
        &self.parts.plans
    }

    pub fn plan(&self, name: &str) -> Result<PlanConfig, Error> {
        self.parts
            .plans
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::EntitlementDenied(format!("plan `{name}` is not offered by this signer"))
            })
    }
}

enum Scheme {
    Bearer,
    Dpop,
}

/// Exactly one `Authorization` header: with two, which one admission read and which one a proxy
/// or log read could differ, so a second header is refused, not ignored.
fn split_authorization(values: &[String]) -> Result<(Scheme, &str), Error> {
    let value = match values {
        [one] => one,
        [] => {
            return Err(Error::Unauthenticated(
                "missing Authorization header".into(),
            ));
        }
        _ => {
            return Err(Error::Unauthenticated(
                "more than one Authorization header".into(),
            ));
        }
    };
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Error::Unauthenticated("malformed Authorization header".into()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Unauthenticated("empty access token".into()));
    }
    if scheme.eq_ignore_ascii_case("dpop") {
        Ok((Scheme::Dpop, token))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok((Scheme::Bearer, token))
    } else {
        Err(Error::Unauthenticated(format!(
            "authorization scheme `{}` is not supported (DPoP or Bearer)",
            crate::error::clip(scheme)
        )))
    }
}

fn token_error(e: optok::TokenError) -> Error {
    Error::Unauthenticated(format!("OpTok: {e}"))
}

#[cfg(test)]
mod tests;
