//! Admission against hostile callers: every forged, expired, misbound or replayed credential,
//! every bad PoE and every quota breach is refused with its stable code — and audited. The
//! node talks to the Authority and licensing stand-ins over HTTPS with its production clients.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use stella_api::dpop::{DpopKey, unix_now};
use stella_tests::{
    NodeProcess, PLAN, Services, audit_api, client_for, refused_with, sbom_request_json, stella,
    stella_ok,
};

const SIGN: &str = "/api/v1/signer/sign/dsse";

/// One TLS node that accepts client certificates from the stand-ins' CA, with short PoE cache
/// times so outages and revocations show within seconds.
struct Fixture {
    _tmp: tempfile::TempDir,
    services: Services,
    node: NodeProcess,
    /// tenant-a's DPoP key and license (plan `team`).
    key: DpopKey,
    poe: Value,
}

fn fixture(ttl: u64, grace: u64) -> Fixture {
    fixture_with(ttl, grace, "preauth_summary_seconds = 1")
}

fn fixture_with(ttl: u64, grace: u64, extra_admission: &str) -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    let key = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), key.to_pkcs8_pem());
    let pki = services.pki.display().to_string();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\n[tls]\ncert = \"{pki}/node-1.pem\"\nkey = \"{pki}/node-1.key\"\nclient_ca = \"{pki}/ca.pem\"\n[signing]\nkey_file = \"{d}/signing.pem\"\n{admission}",
        d = dir.display(),
        admission = services.node_toml_with(
            &[
                (PLAN, 1000, 100, 1024 * 1024),
                ("tiny", 1000, 100, 2048),
                (stella_tests::OWN_KEYS_PLAN, 1000, 100, 1024 * 1024),
            ],
            extra_admission,
            &format!(
                "cache_ttl_seconds = {ttl}\nnegative_cache_ttl_seconds = 1\ngrace_seconds = {grace}"
            ),
        ),
    );
    std::fs::write(dir.join("node.toml"), config).expect("config");
    let node = NodeProcess::start(
        &[
            "serve",
            "--config",
            dir.join("node.toml").to_str().expect("utf8"),
        ],
        &dir.join("data"),
    );
    let creds = services.credentials("tenant-a-ci", PLAN, &node.url);
    let key = DpopKey::from_pem(creds.dpop_key_pem.as_deref().expect("key")).expect("dpop");
    let poe = serde_json::to_value(creds.poe).expect("poe");
    Fixture {
        _tmp: tmp,
        services,
        node,
        key,
        poe,
    }
}

impl Fixture {
    fn url(&self) -> String {
        format!("{}{SIGN}", self.node.url)
    }

    fn http(&self, client_cert: bool) -> reqwest::blocking::Client {
        let ca = std::fs::read(self.services.ca_path()).expect("ca");
        let mut builder = reqwest::blocking::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).expect("ca"))
            .timeout(Duration::from_secs(20));
        if client_cert {
            let pem = [
                std::fs::read(self.services.pki.join("admin.pem")).expect("cert"),
                std::fs::read(self.services.pki.join("admin.key")).expect("key"),
            ]
            .concat();
            builder = builder.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        builder.build().expect("client")
    }

    /// A token for tenant-a bound to `self.key`, with `edit` applied to its claims.
    fn token(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims =
            self.services
                .authority
                .claims("tenant-a-ci", "tenant-a", "signer.sign signer.audit");
        claims["cnf"] = json!({"jkt": self.key.thumbprint()});
        edit(&mut claims);
        self.services.authority.mint(&claims).expect("mint")
    }

    fn proof(&self, token: &str) -> String {
        self.key
            .proof("POST", &self.url(), Some(token), None, unix_now())
            .expect("proof")
    }

    fn body(&self) -> Value {
        let mut body = sbom_request_json();
        body["poe"] = self.poe.clone();
        body
    }

    /// POSTs a signing request with exactly these credentials; returns (status, problem).
    fn send(
        &self,
        request_id: &str,
        authorization: &str,
        proof: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        self.send_with(&self.http(false), request_id, authorization, proof, body)
    }

    fn send_with(
        &self,
        http: &reqwest::blocking::Client,
        request_id: &str,
        authorization: &str,
        proof: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut headers = vec![("authorization", authorization)];
        headers.extend(proof.map(|p| ("dpop", p)));
        self.send_raw(http, request_id, &headers, body)
    }

    /// POSTs the request body with exactly these headers (repeated names are sent repeated).
    fn send_headers(&self, request_id: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        self.send_raw(&self.http(false), request_id, headers, &self.body())
    }

    /// The status and JSON answer; a `Retry-After` header is copied into `retryAfterHeader`.
    fn send_raw(
        &self,
        http: &reqwest::blocking::Client,
        request_id: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        let mut request = http
            .post(self.url())
            .header("x-request-id", request_id)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().expect("request");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut answer: Value = response.json().unwrap_or(Value::Null);
        if let Some(seconds) = retry_after {
            answer["retryAfterHeader"] = json!(seconds);
        }
        (status, answer)
    }

    /// The audit records that summarise refusals before authentication, and the sum of their
    /// counts of `code` from loopback, once that sum reaches `at_least` (polled: summaries are
    /// written every second).
    fn preauth_counted(&self, code: &str, at_least: u64) -> (Vec<Value>, u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let summaries: Vec<Value> = self
                .audit()
                .into_values()
                .filter(|r| {
                    r["requestId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("preauth-node-"))
                })
                .collect();
            let counted = summaries
                .iter()
                .map(|r| count_in_reason(r["reason"].as_str().unwrap_or(""), code))
                .sum();
            if counted >= at_least || std::time::Instant::now() > deadline {
                return (summaries, counted);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn dpop(&self, request_id: &str, token: &str) -> (u16, Value) {
        let proof = self.proof(token);
        self.send(
            request_id,
            &format!("DPoP {token}"),
            Some(&proof),
            &self.body(),
        )
    }

    /// Every audit record, by request id (read with the Attestor's scope).
    fn audit(&self) -> HashMap<String, Value> {
        let mut creds = self.services.credentials("operator", PLAN, &self.node.url);
        creds.ca_cert_pem = Some(std::fs::read_to_string(self.services.ca_path()).expect("ca"));
        let page = audit_api(&client_for(&self.node.url, creds), "limit=1000");
        page["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| (r["requestId"].as_str().unwrap_or("").to_owned(), r.clone()))
            .collect()
    }
}

/// The answer is a problem with this status and code (its JSON is the failure message).
fn assert_refused(status: u16, answer: &Value, want_status: u16, code: &str) {
    assert_eq!(
        (status, answer["code"].as_str()),
        (want_status, Some(code)),
        "{answer}"
    );
}

/// `N` in a summary reason's "`code` from 127.0.0.1: N".
fn count_in_reason(reason: &str, code: &str) -> u64 {
    let key = format!("{code} from 127.0.0.1: ");
    reason
        .split_once(&key)
        .and_then(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

fn thumbprint(cert_pem: &Path) -> String {
    let der = rustls_pki_types::CertificateDer::from_pem_file(cert_pem).expect("cert");
    URL_SAFE_NO_PAD.encode(<sha2::Sha256 as sha2::Digest>::digest(der.as_ref()))
}

#[test]
fn forged_expired_misbound_and_replayed_credentials_are_refused_and_audited() {
    let f = fixture(300, 3600);
    let now = unix_now();
    let mut expected: Vec<(&str, &str)> = Vec::new();
    let mut check = |id: &'static str, (status, problem): (u16, Value), code: &'static str| {
        let want = if code == "invalid_token" { 401 } else { 403 };
        let want = if code == "artifact_too_large" {
            413
        } else {
            want
        };
        assert_eq!(status, want, "{id}: {problem}");
        assert_eq!(problem["code"], code, "{id}: {problem}");
        expected.push((id, code));
    };

    // The well-formed request is accepted: the refusals below are about one flaw each.
    let good = f.token(|_| {});
    let (status, body) = f.dpop("ok-1", &good);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quota"]["plan"], PLAN);
    assert_eq!(body["quota"]["remaining"], 999);
    assert_eq!(body["quota"]["poeState"], "valid");

    // --- the OpTok ---
    check(
        "expired",
        f.dpop(
            "expired",
            &f.token(|c| {
                c["exp"] = json!(now - 120);
                c["iat"] = json!(now - 700);
                c["nbf"] = json!(now - 700);
            }),
        ),
        "invalid_token",
    );
    check(
        "not-yet-valid",
        f.dpop("not-yet-valid", &f.token(|c| c["nbf"] = json!(now + 600))),
        "invalid_token",
    );
    check(
        "wrong-issuer",
        f.dpop(
            "wrong-issuer",
            &f.token(|c| c["iss"] = json!("https://evil.example")),
        ),
        "invalid_token",
    );
    check(
        "wrong-audience",
        f.dpop("wrong-audience", &f.token(|c| c["aud"] = json!("attestor"))),
        "invalid_token",
    );
    check(
        "wrong-scope",
        f.dpop(
            "wrong-scope",
            &f.token(|c| c["scope"] = json!("signer.audit")),
        ),
        "invalid_token",
    );
    check(
        "no-tenant",
        f.dpop(
            "no-tenant",
            &f.token(|c| {
                c.as_object_mut().expect("obj").remove("tid");
            }),
        ),
        "invalid_token",
    );
    check(
        "other-tenant",
        f.dpop("other-tenant", &f.token(|c| c["tid"] = json!("tenant-b"))),
        "entitlement_denied",
    );
    check(
        "plan-mismatch",
        f.dpop("plan-mismatch", &f.token(|c| c["plan"] = json!("gold"))),
        "entitlement_denied",
    );
    let kid = jsonwebtoken::decode_header(&good)
        .expect("header")
        .kid
        .expect("kid");
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').nth(1).expect("claims"))
            .expect("b64"),
    )
    .expect("claims");
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt", "kid": kid})),
        b64(&claims)
    );
    check("alg-none", f.dpop("alg-none", &alg_none), "invalid_token");
    // HMAC keyed with the Authority's public key: the classic algorithm-confusion forgery.
    let public_jwk = f.services.authority.jwks()["keys"][0].to_string();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_jwk.as_bytes()).expect("hmac key"),
    )
    .expect("hs256");
    check(
        "key-confusion",
        f.dpop("key-confusion", &confused),
        "invalid_token",
    );
    let mut unknown_kid_header = jsonwebtoken::decode_header(&good).expect("header");
    unknown_kid_header.kid = Some("no-such-key".into());
    let unknown_kid = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&unknown_kid_header).expect("json")),
        good.split_once('.').expect("jwt").1
    );
    check(
        "unknown-kid",
        f.dpop("unknown-kid", &unknown_kid),
        "invalid_token",
    );
    let mut bad_sig = good.clone();
    let last = bad_sig.pop().expect("char");
    bad_sig.push(if last == 'A' { 'B' } else { 'A' });
    check(
        "bad-signature",
        f.dpop("bad-signature", &bad_sig),
        "invalid_token",
    );
    // A token not bound to any key or certificate is a bearer token: not accepted.
    let unbound = f.token(|c| {
        c.as_object_mut().expect("obj").remove("cnf");
    });
    check(
        "unbound",
        f.send("unbound", &format!("Bearer {unbound}"), None, &f.body()),
        "invalid_token",
    );

    // --- the DPoP proof ---
    let tok = f.token(|_| {});
    let proof = |method: &str, url: &str, ath: Option<&str>, iat: i64| {
        f.key.proof(method, url, ath, None, iat).expect("proof")
    };
    let auth = format!("DPoP {tok}");
    check(
        "wrong-htm",
        f.send(
            "wrong-htm",
            &auth,
            Some(&proof("PUT", &f.url(), Some(&tok), now)),
            &f.body(),
        ),
        "invalid_token",
    );
    check(
        "wrong-htu",
        f.send(
            "wrong-htu",
            &auth,
            Some(&proof(
                "POST",
                &format!("{}/api/v1/signer/audit", f.node.url),
                Some(&tok),
                now,
            )),
            &f.body(),
        ),
        "invalid_token",
    );
    check(
        "stale-iat",
        f.send(
            "stale-iat",
            &auth,
            Some(&proof("POST", &f.url(), Some(&tok), now - 3600)),
            &f.body(),
        ),
        "invalid_token",
    );
    check(
        "missing-ath",
        f.send(
            "missing-ath",
            &auth,
            Some(&proof("POST", &f.url(), None, now)),
            &f.body(),
        ),
        "invalid_token",
    );
    let other = f.token(|c| c["jti"] = json!("another-token"));
    check(
        "wrong-ath",
        f.send(
            "wrong-ath",
            &auth,
            Some(&proof("POST", &f.url(), Some(&other), now)),
            &f.body(),
        ),
        "invalid_token",
    );
    check(
        "no-proof",
        f.send("no-proof", &auth, None, &f.body()),
        "invalid_token",
    );
    let stranger = DpopKey::from_pem(
        &stella_signer::FileKeySigner::generate()
            .expect("key")
            .to_pkcs8_pem(),
    )
    .expect("key");
    let stranger_proof = stranger
        .proof("POST", &f.url(), Some(&tok), None, now)
        .expect("proof");
    check(
        "jkt-mismatch",
        f.send("jkt-mismatch", &auth, Some(&stranger_proof), &f.body()),
        "invalid_token",
    );
    let once = proof("POST", &f.url(), Some(&tok), now);
    let (status, first) = f.send("replay-first", &auth, Some(&once), &f.body());
    assert_eq!(status, 200, "{first}");
    // The same proof for the same request is a retry: the committed outcome, not a second
    // signature (exactly once); for another request it is a replay.
    let (status, again) = f.send("replay-retry", &auth, Some(&once), &f.body());
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["auditId"], first["auditId"]);
    assert_eq!(again["envelope"], first["envelope"]);
    let mut other = f.body();
    other["subject"][0]["name"] = json!("another-artifact");
    check(
        "replay-same-node",
        f.send("replay-same-node", &auth, Some(&once), &other),
        "invalid_token",
    );

    // `iat` at the ends of i64 (and at or before the epoch) is stale: no wrap-around into the
    // window, so such a proof is refused the first time and every time after.
    for (id, iat) in [
        ("iat-min", i64::MIN),
        ("iat-min-plus", i64::MIN + 1000),
        ("iat-zero", 0),
        ("iat-negative", -1),
        ("iat-max", i64::MAX),
    ] {
        let wrapped = proof("POST", &f.url(), Some(&tok), iat);
        check(
            id,
            f.send(id, &auth, Some(&wrapped), &f.body()),
            "invalid_token",
        );
        let again = format!("{id}-again");
        let (status, problem) = f.send(&again, &auth, Some(&wrapped), &f.body());
        assert_refused(status, &problem, 401, "invalid_token");
    }
    // …and for reads, whose proofs this node claims locally.
    let audit_url = format!("{}/api/v1/signer/audit", f.node.url);
    let read_token = f.token(|_| {});
    let read_proof = f
        .key
        .proof("GET", &audit_url, Some(&read_token), None, i64::MIN)
        .expect("proof");
    for _ in 0..2 {
        let response = f
            .http(false)
            .get(&audit_url)
            .header("authorization", format!("DPoP {read_token}"))
            .header("dpop", &read_proof)
            .send()
            .expect("audit read");
        assert_eq!(response.status().as_u16(), 401, "a wrapped iat never reads");
    }

    // Two Authorization headers: refused, whichever comes first.
    let fresh = proof("POST", &f.url(), Some(&tok), now);
    let (status, problem) = f.send_headers(
        "two-authorization",
        &[
            ("authorization", auth.as_str()),
            ("authorization", "Bearer junk"),
            ("dpop", fresh.as_str()),
        ],
    );
    assert_refused(status, &problem, 401, "invalid_token");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("more than one Authorization")),
        "{problem}"
    );
    let (status, problem) = f.send_headers(
        "two-authorization-reversed",
        &[
            ("authorization", "Bearer junk"),
            ("authorization", auth.as_str()),
            ("dpop", fresh.as_str()),
        ],
    );
    assert_refused(status, &problem, 401, "invalid_token");
    // The proof was not spent by the refused requests: alone, the same header signs.
    let (status, body) = f.send("one-authorization", &auth, Some(&fresh), &f.body());
    assert_eq!(status, 200, "{body}");

    // --- mTLS binding ---
    let cert_thumbprint = thumbprint(&f.services.pki.join("admin.pem"));
    let mtls_token = f.token(|c| c["cnf"] = json!({"x5t#S256": cert_thumbprint}));
    let with_cert = f.http(true);
    let (status, body) = f.send_with(
        &with_cert,
        "mtls-ok",
        &format!("Bearer {mtls_token}"),
        None,
        &f.body(),
    );
    assert_eq!(
        status, 200,
        "an mTLS-bound token with its certificate signs: {body}"
    );
    let wrong_cert_token =
        f.token(|c| c["cnf"] = json!({"x5t#S256": URL_SAFE_NO_PAD.encode([7u8; 32])}));
    check(
        "mtls-mismatch",
        f.send_with(
            &with_cert,
            "mtls-mismatch",
            &format!("Bearer {wrong_cert_token}"),
            None,
            &f.body(),
        ),
        "invalid_token",
    );
    check(
        "mtls-no-cert",
        f.send(
            "mtls-no-cert",
            &format!("Bearer {mtls_token}"),
            None,
            &f.body(),
        ),
        "invalid_token",
    );

    // --- Idempotency-Key (callers without DPoP) ---
    // A retry with the same key and body gets the committed outcome (no second signature, no
    // second record); the same key for another body is a conflict; without a key, every
    // request is a new one.
    let bearer = format!("Bearer {mtls_token}");
    let keyed = |id: &str, key: &str, body: &Value| {
        f.send_raw(
            &with_cert,
            id,
            &[("authorization", bearer.as_str()), ("idempotency-key", key)],
            body,
        )
    };
    let (status, first) = keyed("idem-first", "build-4711-sbom", &f.body());
    assert_eq!(status, 200, "{first}");
    let (status, again) = keyed("idem-retry", "\"build-4711-sbom\"", &f.body());
    assert_eq!(status, 200, "{again}");
    for field in ["auditId", "envelope", "bundleSha256"] {
        assert_eq!(again[field], first[field], "{field}");
    }
    assert_eq!(
        again["requestId"], "idem-first",
        "the first attempt's request id"
    );
    let mut other = f.body();
    other["subject"][0]["name"] = json!("another-artifact");
    let (status, conflict) = keyed("idem-conflict", "build-4711-sbom", &other);
    assert_refused(status, &conflict, 409, "idempotency_conflict");
    let (status, bad) = keyed("idem-bad-key", "has space", &f.body());
    assert_refused(status, &bad, 400, "invalid_request");
    let (_, one) = f.send_with(&with_cert, "no-key-1", &bearer, None, &f.body());
    let (_, two) = f.send_with(&with_cert, "no-key-2", &bearer, None, &f.body());
    assert_ne!(
        one["auditId"], two["auditId"],
        "without a key, two signings"
    );

    // --- the PoE ---
    let license = f.poe["value"].as_str().expect("license").to_owned();
    let parts: Vec<&str> = license.split('.').collect();
    let mut license_claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    license_claims["plan"] = json!("enterprise");
    let tampered = format!("{}.{}.{}", parts[0], b64(&license_claims), parts[2]);
    let mut body = f.body();
    body["poe"]["value"] = json!(tampered);
    let tok = f.token(|_| {});
    check(
        "tampered-poe",
        f.send(
            "tampered-poe",
            &format!("DPoP {tok}"),
            Some(&f.proof(&tok)),
            &body,
        ),
        "entitlement_denied",
    );
    let revoked = f
        .services
        .licensing
        .issue("lic-revoked", "tenant-a", PLAN, now + 3600)
        .expect("license");
    f.services.licensing.revoke("lic-revoked");
    let mut body = f.body();
    body["poe"]["value"] = json!(revoked);
    check(
        "revoked-poe",
        f.send(
            "revoked-poe",
            &format!("DPoP {tok}"),
            Some(&f.proof(&tok)),
            &body,
        ),
        "entitlement_denied",
    );
    let foreign = f
        .services
        .licensing
        .issue("lic-b", "tenant-b", PLAN, now + 3600)
        .expect("license");
    let mut body = f.body();
    body["poe"]["value"] = json!(foreign);
    check(
        "foreign-poe",
        f.send(
            "foreign-poe",
            &format!("DPoP {tok}"),
            Some(&f.proof(&tok)),
            &body,
        ),
        "entitlement_denied",
    );
    // --- installation binding: a token the Authority issued to an installation (`inst`)
    // needs that installation's PoE.
    let installed = f.token(|c| c["inst"] = json!("inst-1"));
    check(
        "inst-poe-of-no-installation",
        f.send(
            "inst-poe-of-no-installation",
            &format!("DPoP {installed}"),
            Some(&f.proof(&installed)),
            &f.body(),
        ),
        "entitlement_denied",
    );
    let license_for = |id: &str, installation: &str| {
        f.services
            .licensing
            .issue_for(id, "tenant-a", PLAN, now + 3600, Some(installation))
            .expect("license")
    };
    let mut body = f.body();
    body["poe"]["value"] = json!(license_for("lic-inst-2", "inst-2"));
    check(
        "inst-poe-of-another-installation",
        f.send(
            "inst-poe-of-another-installation",
            &format!("DPoP {installed}"),
            Some(&f.proof(&installed)),
            &body,
        ),
        "entitlement_denied",
    );
    let mut body = f.body();
    body["poe"]["value"] = json!(license_for("lic-inst-1", "inst-1"));
    let (status, answer) = f.send(
        "inst-poe-of-this-installation",
        &format!("DPoP {installed}"),
        Some(&f.proof(&installed)),
        &body,
    );
    assert_eq!(status, 200, "the installation's own PoE entitles: {answer}");

    let mut body = f.body();
    body.as_object_mut().expect("obj").remove("poe");
    check(
        "no-poe",
        f.send(
            "no-poe",
            &format!("DPoP {tok}"),
            Some(&f.proof(&tok)),
            &body,
        ),
        "entitlement_denied",
    );

    // --- plan limits: a plan's artifact size ---
    let tiny = f
        .services
        .licensing
        .issue("lic-tiny", "tenant-a", "tiny", now + 3600)
        .expect("license");
    let mut body = f.body();
    body["poe"]["value"] = json!(tiny);
    body["predicate"]["padding"] = json!("x".repeat(4096));
    check(
        "too-large-for-plan",
        f.send(
            "too-large-for-plan",
            &format!("DPoP {tok}"),
            Some(&f.proof(&tok)),
            &body,
        ),
        "artifact_too_large",
    );

    // --- key rotation: the Authority signs with a new key; the node fetches the JWKS again
    // (at most once per jwks_min_refresh_seconds) and accepts the new kid.
    std::thread::sleep(Duration::from_millis(1100));
    f.services
        .authority
        .add_key(
            &stella_signer::FileKeySigner::generate()
                .expect("key")
                .to_pkcs8_pem(),
        )
        .expect("rotate");
    let rotated = f.token(|_| {});
    assert_ne!(
        jsonwebtoken::decode_header(&rotated).expect("h").kid,
        jsonwebtoken::decode_header(&good).expect("h").kid
    );
    let (status, body) = f.dpop("rotated-kid", &rotated);
    assert_eq!(
        status, 200,
        "a token from the rotated key is accepted: {body}"
    );

    // Refusals before the token verified name nobody: they are counted in the node's periodic
    // summary records, not audited one by one. Every other refusal is audited with its code.
    const COUNTED: [&str; 10] = [
        "expired",
        "not-yet-valid",
        "wrong-issuer",
        "wrong-audience",
        "no-tenant",
        "alg-none",
        "key-confusion",
        "unknown-kid",
        "bad-signature",
        "unbound",
    ];
    // …plus the two requests with two Authorization headers.
    let (summaries, counted) = f.preauth_counted("invalid_token", COUNTED.len() as u64 + 2);
    assert_eq!(counted, COUNTED.len() as u64 + 2, "{summaries:?}");
    for summary in &summaries {
        assert_eq!(summary["decision"], "denied", "{summary}");
        assert_eq!(summary["tenant"], "", "{summary}");
        assert!(
            summary["reason"].as_str().is_some_and(|r| r.len() <= 520),
            "{summary}"
        );
    }
    let audit = f.audit();
    for id in COUNTED
        .iter()
        .chain(&["two-authorization", "two-authorization-reversed"])
    {
        assert!(
            !audit.contains_key(*id),
            "{id} is counted, not audited alone"
        );
    }
    for (id, code) in expected.iter().filter(|(id, _)| !COUNTED.contains(id)) {
        let record = audit.get(*id).unwrap_or_else(|| panic!("{id} is audited"));
        assert_eq!(record["decision"], "denied", "{id}: {record}");
        assert!(
            record["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(code)),
            "{id}: {record}"
        );
        assert!(record.get("bundleSha256").is_none(), "{id}");
    }
    for id in ["ok-1", "replay-first", "mtls-ok", "idem-first"] {
        assert_eq!(audit[id]["decision"], "signed", "{id}");
        assert_eq!(audit[id]["poeState"], "valid", "{id}");
    }
    // Retries answered from the committed outcome leave no record of their own.
    for id in ["replay-retry", "idem-retry"] {
        assert!(!audit.contains_key(id), "{id} is not a second decision");
    }
    assert!(
        audit["idem-conflict"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("idempotency_conflict")),
        "{}",
        audit["idem-conflict"]
    );
    assert_eq!(audit["ok-1"]["tenant"], "tenant-a");
    assert_eq!(audit["ok-1"]["plan"], PLAN);
}

#[test]
fn an_unauthenticated_flood_buys_no_audit_records_and_is_refused_at_the_door_per_source() {
    let f = fixture_with(
        300,
        3600,
        "preauth_summary_seconds = 1\nfailed_auth_burst = 5\nfailed_auth_per_second = 1",
    );
    // An honest caller signs first: its token is one the node has verified.
    let tok = f.token(|_| {});
    let (status, body) = f.dpop("honest-before", &tok);
    assert_eq!(status, 200, "{body}");
    let records_before = f.audit().len();

    // 40 requests with a 480-byte bogus scheme from the same address.
    let junk = format!("{} token", "x".repeat(480));
    let started = std::time::Instant::now();
    let mut unauthenticated = 0u64;
    let mut limited = 0u64;
    for i in 0..40 {
        let (status, problem) =
            f.send_headers(&format!("flood-{i}"), &[("authorization", junk.as_str())]);
        match (status, problem["code"].as_str()) {
            (401, Some("invalid_token")) => {
                unauthenticated += 1;
                let detail = problem["detail"].as_str().unwrap_or("");
                assert!(detail.len() < 200, "the scheme is echoed clipped: {detail}");
            }
            (429, Some("rate_limited")) => {
                limited += 1;
                let retry: u64 = problem["retryAfterHeader"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("Retry-After");
                assert!(retry >= 1, "{problem}");
            }
            other => panic!("flood-{i}: unexpected {other:?}: {problem}"),
        }
    }
    let elapsed = started.elapsed().as_secs() + 1;
    assert!(
        (5..=5 + elapsed).contains(&unauthenticated),
        "a burst of 5 plus 1/s: {unauthenticated} verified in {elapsed} s"
    );
    assert_eq!(unauthenticated + limited, 40);

    // The honest caller, from the same address, still signs with the token the node knows.
    let (status, body) = f.dpop("honest-during", &tok);
    assert_eq!(status, 200, "{body}");

    // The flood left only summary records: counted by code and source, none per request.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (summaries, counted) = loop {
        let (summaries, invalid) = f.preauth_counted("invalid_token", unauthenticated);
        let rate_limited: u64 = summaries
            .iter()
            .map(|r| count_in_reason(r["reason"].as_str().unwrap_or(""), "rate_limited"))
            .sum();
        if invalid + rate_limited >= 40 || std::time::Instant::now() > deadline {
            break (summaries, invalid + rate_limited);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(counted, 40, "{summaries:?}");
    let audit = f.audit();
    assert!(
        !audit.keys().any(|id| id.starts_with("flood-")),
        "no record per unauthenticated request"
    );
    assert_eq!(
        audit.len(),
        records_before + 1 + summaries.len(),
        "the honest signing and the summaries, nothing else"
    );
    let seconds = started.elapsed().as_secs() + 2;
    assert!(
        summaries.len() as u64 <= seconds,
        "one summary per second at most: {summaries:?}"
    );
}

#[test]
fn a_tenant_cannot_grow_the_replicated_state_with_approval_requests() {
    use stella_api::{ApprovalDecision, ApprovalRequest};
    let f = fixture(300, 3600);
    let client_of = |id: &str| {
        let mut creds = f.services.credentials(id, PLAN, &f.node.url);
        creds.ca_cert_pem = Some(std::fs::read_to_string(f.services.ca_path()).expect("ca"));
        client_for(&f.node.url, creds)
    };
    let tenant_a = client_of("tenant-a-ci");
    let tenant_b = client_of("tenant-b-ci");
    let operator = client_of("operator");
    let request_for = |client: &stella_api::Client, with_poe: bool, expires_in_seconds: u64| {
        client.request_approval(&ApprovalRequest {
            image_digest: format!("sha256:{}", "ab".repeat(32)),
            reason: "r".repeat(500),
            expires_in_seconds,
            poe: client.credentials().poe.clone().filter(|_| with_poe),
        })
    };
    let request = |client: &stella_api::Client, with_poe: bool| request_for(client, with_poe, 3600);
    // Only an entitled tenant may add to the replicated state.
    refused_with(request(&tenant_a, false), "entitlement_denied");
    let mut ids = Vec::new();
    for _ in 0..32 {
        let change = request(&tenant_a, true).expect("recorded");
        ids.push(change.approval_id.expect("id"));
    }
    let problem = refused_with(request(&tenant_a, true), "plan_throttled");
    assert!(problem.retry_after_seconds.is_some(), "{problem:?}");
    assert!(problem.detail.contains("pending"), "{problem:?}");
    // Another tenant has its own bound; an operator's decision makes room.
    request(&tenant_b, true).expect("tenant b is not limited by tenant a");
    operator
        .decide_approval(&ApprovalDecision {
            approval_id: ids[0].clone(),
            verdict: "denied".into(),
            reason: "not a release of ours".into(),
        })
        .expect("denied");
    request(&tenant_a, true).expect("one decided: room for one more");
    refused_with(request(&tenant_a, true), "plan_throttled");
    // Approvals that lapse undecided stop counting at once, although nothing has pruned them
    // from the state yet: tenant b fills its bound with short-lived requests, waits, files again.
    let filed = std::time::Instant::now();
    for _ in 0..31 {
        request_for(&tenant_b, true, 8).expect("recorded");
    }
    refused_with(request(&tenant_b, true), "plan_throttled");
    // Expiry is a matter of time passing: wait until the short-lived ones have lapsed.
    std::thread::sleep(Duration::from_millis(8_500).saturating_sub(filed.elapsed()));
    request(&tenant_b, true).expect("the lapsed approvals no longer count");
    // The denied approval left the state; its history stays in the audit log.
    let audit = f.audit();
    assert!(
        audit
            .values()
            .any(|r| r["reason"].as_str().is_some_and(|t| t.contains(&ids[0]))),
        "the denied approval is audited"
    );
}

#[test]
fn a_licensing_outage_is_bridged_only_within_grace_and_the_bypass_is_audited_and_expires() {
    // Answers are fresh for 1 s and served stale for 3 s more while licensing is down.
    let f = fixture(1, 3);
    let tok = f.token(|_| {});
    let (status, body) = f.dpop("before-outage", &tok);
    assert_eq!(status, 200, "{body}");

    // A licensing service that refuses the signer's client (401) has answered: no cached
    // positive stands in for it, not even within grace.
    f.services.licensing.set_rejecting_client(true);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = f.dpop("client-refused", &f.token(|_| {}));
    assert_refused(status, &body, 403, "entitlement_denied");
    f.services.licensing.set_rejecting_client(false);
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = f.dpop("client-accepted-again", &f.token(|_| {}));
    assert_eq!(status, 200, "{body}");

    f.services.licensing.set_outage(true);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = f.dpop("stale", &f.token(|_| {}));
    assert_eq!(
        status, 200,
        "within grace the last-known entitlement serves: {body}"
    );
    assert_eq!(body["quota"]["poeState"], "stale");
    std::thread::sleep(Duration::from_millis(3000));
    let (status, body) = f.dpop("past-grace", &f.token(|_| {}));
    assert_refused(status, &body, 403, "entitlement_denied");

    // The operator switches the bypass on for a short while (CLI, scope signer.admin).
    let mut ops = f.services.credentials("operator", PLAN, &f.node.url);
    ops.ca_cert_pem = Some(std::fs::read_to_string(f.services.ca_path()).expect("ca"));
    let ops_file = f._tmp.path().join("ops.json");
    std::fs::write(&ops_file, serde_json::to_vec(&ops).expect("json")).expect("ops");
    let ops_path = ops_file.to_str().expect("utf8");
    let refused = stella(&[
        "admin",
        "poe-bypass",
        "--enable",
        "--reason",
        "licensing down",
        "--for",
        "9d",
        "--credentials",
        ops_path,
    ]);
    assert!(
        !refused.status.success(),
        "a bypass longer than 7 days is refused"
    );
    let on = stella_ok(&[
        "admin",
        "poe-bypass",
        "--enable",
        "--reason",
        "INC-1234 licensing down",
        "--for",
        "4s",
        "--credentials",
        ops_path,
    ]);
    let status_json: Value = serde_json::from_slice(&on.stdout).expect("toggle json");
    assert_eq!(status_json["active"], true);
    assert_eq!(status_json["actor"], "operator@ops");
    // A tenant cannot switch it.
    let tenant_creds = f._tmp.path().join("tenant.json");
    let mut tenant = f.services.credentials("tenant-a-ci", PLAN, &f.node.url);
    tenant.ca_cert_pem = ops.ca_cert_pem.clone();
    std::fs::write(&tenant_creds, serde_json::to_vec(&tenant).expect("json")).expect("creds");
    let forbidden = stella(&[
        "admin",
        "poe-bypass",
        "--disable",
        "--reason",
        "x",
        "--credentials",
        tenant_creds.to_str().expect("utf8"),
    ]);
    assert!(!forbidden.status.success());

    let (status, body) = f.dpop("bypassed", &f.token(|_| {}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quota"]["poeState"], "bypassed");
    std::thread::sleep(Duration::from_millis(4500));
    let (status, body) = f.dpop("bypass-expired", &f.token(|_| {}));
    assert_refused(status, &body, 403, "entitlement_denied");

    // Licensing back: the PoE is honoured again, and a revocation shows once the cache expires.
    f.services.licensing.set_outage(false);
    let (status, body) = f.dpop("recovered", &f.token(|_| {}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quota"]["poeState"], "valid");

    let audit = f.audit();
    assert_eq!(audit["stale"]["poeState"], "stale");
    assert_eq!(audit["past-grace"]["decision"], "denied");
    assert_eq!(audit["bypassed"]["poeState"], "bypassed");
    assert_eq!(audit["bypassed"]["decision"], "signed");
    assert_eq!(audit["bypass-expired"]["decision"], "denied");
    let change = audit
        .values()
        .find(|r| r["decision"] == "configured")
        .expect("the bypass change is audited");
    assert_eq!(change["callerSubject"], "operator");
    assert!(
        change["reason"]
            .as_str()
            .is_some_and(|r| r.contains("INC-1234")),
        "{change}"
    );
}

#[test]
fn proofs_are_single_use_cluster_wide_nonces_hold_on_every_node_and_tenants_get_exactly_their_quota()
 {
    use stella_tests::{ClusterOptions, PUBLIC_URL, QUOTA_TENANTS, TestCluster};
    let cluster = TestCluster::start(ClusterOptions {
        plans: vec![("small", 5, 100, 1024 * 1024)],
        dpop_nonces: true,
        ..ClusterOptions::default()
    });
    let http = reqwest::blocking::Client::new();
    let services = &cluster.services;

    // Nonces: a proof without one is answered with a challenge, on any node.
    let key =
        DpopKey::from_pem(cluster.credentials.dpop_key_pem.as_deref().expect("key")).expect("key");
    let mut claims = services
        .authority
        .claims("tenant-a-ci", "tenant-a", "signer.sign");
    claims["cnf"] = json!({"jkt": key.thumbprint()});
    let token = services.authority.mint(&claims).expect("token");
    let mut body = sbom_request_json();
    body["poe"] = serde_json::to_value(&cluster.credentials.poe).expect("poe");
    let public = format!("{PUBLIC_URL}{SIGN}");
    let post = |node: usize, proof: &str, id: &str, body: &Value| {
        let response = http
            .post(format!("{}{SIGN}", cluster.api_url(node)))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .header("x-request-id", id)
            .json(body)
            .send()
            .expect("request");
        let status = response.status().as_u16();
        let nonce = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            status,
            nonce,
            challenge,
            response.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let without_nonce = key
        .proof("POST", &public, Some(&token), None, unix_now())
        .expect("proof");
    let (status, nonce, challenge, _) = post(1, &without_nonce, "no-nonce", &body);
    assert_eq!(status, 401);
    assert!(challenge.contains("use_dpop_nonce"), "{challenge}");
    let nonce = nonce.expect("a DPoP-Nonce header");

    // A nonce from node 1 is good on node 2 (shared secret); the proof names the load
    // balancer's URL, as a client behind it would.
    let proof = key
        .proof("POST", &public, Some(&token), Some(&nonce), unix_now())
        .expect("proof");
    let (status, _, _, first) = post(2, &proof, "first-use", &body);
    assert_eq!(status, 200, "{first}");
    // The same request with the same proof on a third node is a retry: it gets the committed
    // outcome — the same envelope, bundles and audit id — and takes no second grant.
    let (status, _, _, again) = post(3, &proof, "retry-other-node", &body);
    assert_eq!(status, 200, "{again}");
    for field in ["auditId", "envelope", "bundleSha256", "requestId"] {
        assert_eq!(again[field], first[field], "{field}");
    }
    // The same proof for another request, on a third node: the replicated set refuses it.
    let mut other = body.clone();
    other["subject"][0]["name"] = json!("another-artifact");
    let (status, _, _, answer) = post(3, &proof, "replay-other-node", &other);
    assert_refused(status, &answer, 401, "invalid_token");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("replayed")),
        "{answer}"
    );
    let (status, _, _, _) = post(2, &proof, "replay-same-node", &other);
    assert_eq!(status, 401);

    // Quota pressure: six tenants at once, eight attempts each through all nodes, five grants
    // each — exactly. Each node's entitlement cache asks the licensing service about a license
    // once, however many requests carry it at the same time (single flight).
    let introspections_before = services.licensing.calls();
    let outcomes: Vec<(String, u16, Option<String>)> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 1..=QUOTA_TENANTS {
            let creds = services.credentials(&format!("quota-{t}-ci"), "small", "");
            for attempt in 0..8 {
                let node = 1 + (t + attempt) % cluster.len();
                let client = client_for(&cluster.api_url(node), creds.clone());
                handles.push(scope.spawn(move || {
                    let body =
                        serde_json::to_vec(&stella_tests::sbom_request_for(&client)).expect("json");
                    // An honest caller: a 503 (a leader change on a busy machine) is retried
                    // with the same idempotency key, so it never costs a second grant.
                    let response = client
                        .send_idempotent(SIGN, body, Duration::from_secs(60))
                        .expect("request");
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    (format!("quota-{t}"), response.status().as_u16(), retry)
                }));
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let introspections = services.licensing.calls() - introspections_before;
    assert!(
        introspections <= QUOTA_TENANTS * cluster.len(),
        "{introspections} introspections for {} licenses on {} nodes",
        QUOTA_TENANTS,
        cluster.len()
    );
    for t in 1..=QUOTA_TENANTS {
        let tenant = format!("quota-{t}");
        let mine: Vec<_> = outcomes.iter().filter(|o| o.0 == tenant).collect();
        let granted = mine.iter().filter(|o| o.1 == 200).count();
        let throttled: Vec<_> = mine.iter().filter(|o| o.1 == 429).collect();
        assert_eq!(granted, 5, "{tenant}: {mine:?}");
        assert_eq!(throttled.len(), 3, "{tenant}: {mine:?}");
        assert!(throttled.iter().all(|o| {
            o.2.as_deref()
                .is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1))
        }));
    }

    // The audit log agrees on every node's view: five signatures per tenant, three refusals,
    // and the replays are recorded as denials.
    // Read as the Attestor (an auditor tenant): every tenant's records.
    let auditor = client_for(
        &cluster.api_url(1),
        cluster
            .services
            .credentials("operator", PLAN, &cluster.api_url(1)),
    );
    let page = audit_api(&auditor, "limit=1000");
    let records = page["records"].as_array().expect("records");
    for t in 1..=QUOTA_TENANTS {
        let tenant = format!("quota-{t}");
        let count = |decision: &str| {
            records
                .iter()
                .filter(|r| r["tenant"] == tenant.as_str() && r["decision"] == decision)
                .count()
        };
        assert_eq!(count("signed"), 5, "{tenant}");
        assert_eq!(count("denied"), 3, "{tenant}");
    }
    let replay = records
        .iter()
        .find(|r| r["requestId"] == "replay-other-node")
        .expect("the cross-node replay is audited");
    assert_eq!(replay["decision"], "denied");
    assert!(
        replay["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("invalid_token"))
    );
}

#[test]
fn a_tenant_without_its_own_key_is_not_signed_for_with_the_shared_key_unless_its_plan_says_so() {
    let f = fixture(300, 3600);
    let client = |plan: &str| {
        let mut creds = f.services.credentials("tenant-b-ci", plan, &f.node.url);
        creds.ca_cert_pem = Some(std::fs::read_to_string(f.services.ca_path()).expect("ca"));
        client_for(&f.node.url, creds)
    };
    let sign = |client: &stella_api::Client| {
        let request: stella_api::SignDsseRequest =
            serde_json::from_value(stella_tests::sbom_request_for(client)).expect("request");
        client.sign_dsse(&request)
    };
    // On a plan that opts into the shared key, tenant-b signs with the node's key...
    let shared = client(PLAN);
    assert!(sign(&shared).is_ok());
    // ...on one that does not, it is refused until it has a key of its own, and it is audited.
    let refused = refused_with(
        sign(&client(stella_tests::OWN_KEYS_PLAN)),
        "entitlement_denied",
    );
    assert!(
        refused.detail.contains("has no key of its own"),
        "{}",
        refused.detail
    );
    let audited = f.audit();
    assert!(
        audited.values().any(|r| r["tenant"] == "tenant-b"
            && r["decision"] == "denied"
            && r["reason"]
                .as_str()
                .is_some_and(|t| t.contains("has no key of its own"))),
        "{audited:?}"
    );
}
