use super::*;

fn change(request: ChangeRequest) -> ConfigChange {
    ConfigChange {
        tenant: "ops".into(),
        subject: "alice".into(),
        issuer: "https://authority".into(),
        request_id: "req-1".into(),
        request,
    }
}

#[test]
fn a_change_is_planned_with_its_audit_record() {
    let planned = plan(
        &State::default(),
        &change(ChangeRequest::PoeBypass {
            enabled: true,
            reason: "licensing outage".into(),
            expires_in_seconds: Some(600),
        }),
        None,
        1_000,
        "1970-01-01T00:00:01Z".into(),
    )
    .expect("planned");
    assert_eq!(planned.commands.len(), 1);
    assert!(matches!(&planned.commands[0], Command::SetToggle(t)
            if t.enabled && t.expires_at_ms == Some(601_000) && t.actor == "alice@ops"));
    assert_eq!(planned.audit.poe_state, "bypass_on");
    assert_eq!(planned.audit.request_id, "req-1");
}

#[test]
fn unbounded_or_malformed_requests_are_refused_before_proposing() {
    let state = State::default();
    let at = |request| plan(&state, &change(request), None, u64::MAX - 10, String::new());
    assert!(
        at(ChangeRequest::PoeBypass {
            enabled: true,
            reason: "x".into(),
            expires_in_seconds: None,
        })
        .is_err()
    );
    assert!(
        at(ChangeRequest::PoeBypass {
            enabled: true,
            reason: "x".into(),
            expires_in_seconds: Some(u64::MAX),
        })
        .is_err()
    );
    // Saturates instead of wrapping at the end of time.
    assert!(
        at(ChangeRequest::PoeBypass {
            enabled: true,
            reason: "x".into(),
            expires_in_seconds: Some(60),
        })
        .is_ok()
    );
    assert!(
        at(ChangeRequest::RequestApproval {
            approval_id: "apr-1".into(),
            digest: "sha256:nothex".into(),
            reason: "x".into(),
            expires_in_seconds: 60,
        })
        .is_err()
    );
    assert!(
        at(ChangeRequest::RevokeKey {
            key_id: "nope".into(),
            reason: "x".into(),
        })
        .is_err()
    );
    assert!(
        at(ChangeRequest::RegisterKey {
            tenant: "t".into(),
            plan: "p".into(),
            source: "file".into(),
            public_key_pem: "not a key".into(),
            rotate: false,
            standby: false,
            reason: "x".into(),
        })
        .is_err()
    );
}

#[test]
fn a_threshold_group_comes_only_from_the_leaders_own_key_generation() {
    // A peer cannot hand the leader a group: the wire format has no place for one...
    let wire = r#"{"tenant":"ops","subject":"x","issuer":"i","request_id":"r","request":{"refreshThresholdKey":{"keyId":"k","nodes":[],"reason":"r","group":{"min_signers":2,"holders":[],"public_key_package":[]}}}}"#;
    assert!(serde_json::from_str::<ConfigChange>(wire).is_err());
    // ...nor a command list...
    let wire =
        r#"{"tenant":"ops","subject":"x","issuer":"i","request_id":"r","request":{"commands":[]}}"#;
    assert!(serde_json::from_str::<ConfigChange>(wire).is_err());
    // ...and a key-generation request is planned only with the leader's own group.
    let refresh = change(ChangeRequest::RefreshThresholdKey {
        key_id: "k".into(),
        nodes: Vec::new(),
        reason: "r".into(),
    });
    assert!(plan(&State::default(), &refresh, None, 1, String::new()).is_err());
    let bypass = change(ChangeRequest::PoeBypass {
        enabled: false,
        reason: "r".into(),
        expires_in_seconds: None,
    });
    let group = ThresholdGroup {
        min_signers: 2,
        holders: Vec::new(),
        public_key_package: Vec::new(),
    };
    assert!(plan(&State::default(), &bypass, Some(&group), 1, String::new()).is_err());
}
