//! The PoE stage's pure decisions: a PoE's shape before anything is asked about it, and the
//! licensing service's answer checked against the token.

use super::jose;
use super::licensing::{Introspection, Poe};
use super::optok::OpTok;
use crate::Error;

/// Checks an introspection answer against the token: the PoE must be active, unrevoked,
/// unexpired, and agree with the OpTok on tenant (and plan, if the token states one).
pub fn decide(answer: &Introspection, token: &OpTok, now: i64) -> Result<String, Error> {
    let deny = |m: &str| Err(Error::EntitlementDenied(m.to_owned()));
    if answer.revoked {
        return deny("the proof of entitlement is revoked");
    }
    if !answer.active {
        return deny("the proof of entitlement is not active (unknown, tampered or expired)");
    }
    if answer.exp.is_some_and(|exp| exp <= now) {
        return deny("the proof of entitlement expired");
    }
    if answer.tenant.as_deref() != Some(token.tenant.as_str()) {
        return deny("the proof of entitlement belongs to another tenant");
    }
    let Some(plan) = answer.plan.clone() else {
        return deny("the proof of entitlement names no plan");
    };
    if token.plan.as_ref().is_some_and(|p| *p != plan) {
        return deny("the proof of entitlement's plan disagrees with the token's");
    }
    // The Authority binds the token to an installation: the license must be that installation's
    // (a PoE lifted from one installation does not entitle another).
    if let Some(installation) = &token.installation
        && answer.inst.as_deref() != Some(installation.as_str())
    {
        return deny("the proof of entitlement is not bound to the token's installation");
    }
    Ok(plan)
}

/// Syntax of a PoE before anything is asked about it.
pub(crate) fn check_poe_shape(poe: &Poe, client_cert_sha256: Option<&str>) -> Result<(), Error> {
    if poe.value.is_empty() || poe.value.len() > jose::MAX_JWT_BYTES {
        return Err(Error::EntitlementDenied(
            "the proof of entitlement is empty or too long".into(),
        ));
    }
    match poe.format.as_str() {
        "jwt" => {
            if poe.value.split('.').count() != 3 {
                return Err(Error::EntitlementDenied(
                    "the proof of entitlement is not a JWT".into(),
                ));
            }
            Ok(())
        }
        // An mTLS PoE names the certificate the license was issued to: it must be this one.
        "mtls" => match client_cert_sha256 {
            Some(presented) if presented == poe.value => Ok(()),
            _ => Err(Error::EntitlementDenied(
                "an mtls proof of entitlement must name the presented client certificate".into(),
            )),
        },
        other => Err(Error::EntitlementDenied(format!(
            "proof of entitlement format `{other}` is not supported (jwt or mtls)"
        ))),
    }
}
