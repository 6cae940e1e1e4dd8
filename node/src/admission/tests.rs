use super::*;
use crate::admission::licensing::Introspection;

fn token(plan: Option<&str>) -> OpTok {
    OpTok {
        issuer: "https://authority.test".into(),
        subject: "ci".into(),
        tenant: "tenant-a".into(),
        scopes: vec!["signer.sign".into()],
        plan: plan.map(str::to_owned),
        jti: "j".into(),
        expires_at: 2_000,
        binding: Binding::Dpop { jkt: "k".into() },
        installation: None,
    }
}

fn answer() -> Introspection {
    Introspection {
        active: true,
        license_id: Some("lic".into()),
        plan: Some("team".into()),
        tenant: Some("tenant-a".into()),
        exp: Some(2_000),
        revoked: false,
        inst: None,
    }
}

#[test]
fn a_poe_entitles_only_its_tenant_on_its_plan_while_active() {
    assert_eq!(decide(&answer(), &token(None), 1_000).expect("ok"), "team");
    assert!(decide(&answer(), &token(Some("team")), 1_000).is_ok());
    let denied = |a: Introspection, t: OpTok, now| {
        matches!(decide(&a, &t, now), Err(Error::EntitlementDenied(_)))
    };
    assert!(
        denied(answer(), token(Some("gold")), 1_000),
        "plan disagrees with the token"
    );
    assert!(denied(answer(), token(None), 2_000), "expired");
    assert!(denied(
        Introspection {
            revoked: true,
            ..answer()
        },
        token(None),
        1_000
    ));
    assert!(denied(
        Introspection {
            active: false,
            ..answer()
        },
        token(None),
        1_000
    ));
    assert!(denied(
        Introspection {
            tenant: Some("tenant-b".into()),
            ..answer()
        },
        token(None),
        1_000
    ));
    assert!(denied(
        Introspection {
            tenant: None,
            ..answer()
        },
        token(None),
        1_000
    ));
    assert!(denied(
        Introspection {
            plan: None,
            ..answer()
        },
        token(None),
        1_000
    ));
    // A token bound to an installation needs a PoE of that installation.
    let installed = OpTok {
        installation: Some("inst-1".into()),
        ..token(None)
    };
    assert!(
        denied(answer(), installed.clone(), 1_000),
        "PoE of no installation"
    );
    assert!(denied(
        Introspection {
            inst: Some("inst-2".into()),
            ..answer()
        },
        installed.clone(),
        1_000
    ));
    let mine = Introspection {
        inst: Some("inst-1".into()),
        ..answer()
    };
    assert!(decide(&mine, &installed, 1_000).is_ok());
    assert!(
        decide(&mine, &token(None), 1_000).is_ok(),
        "the token does not say"
    );
}

#[test]
fn poe_formats_are_checked_before_anything_is_asked() {
    let poe = |format: &str, value: &str| Poe {
        format: format.into(),
        value: value.into(),
    };
    assert!(check_poe_shape(&poe("jwt", "a.b.c"), None).is_ok());
    assert!(check_poe_shape(&poe("jwt", "opaque"), None).is_err());
    assert!(check_poe_shape(&poe("mtls", "thumb"), Some("thumb")).is_ok());
    assert!(check_poe_shape(&poe("mtls", "thumb"), Some("other")).is_err());
    assert!(check_poe_shape(&poe("mtls", "thumb"), None).is_err());
    assert!(check_poe_shape(&poe("saml", "x"), None).is_err());
    assert!(check_poe_shape(&poe("jwt", &"a.".repeat(5000)), None).is_err());
}
