//! Scanner release provenance against a real OCI registry (Debian's docker-registry, which has
//! no referrers API: the tag-schema and cosign-tag fallbacks are what run). SBOMs are signed
//! only for trusted scanner images — by release signature, allowlist or approval — and the
//! path that admitted each is audited.

use std::time::Duration;

use serde_json::{Value, json};
use stella_api::{ClientError, SignDsseRequest};
use stella_release::{OCI_INDEX, OCI_MANIFEST, Registry, RegistryConfig, sha256_digest};
use stella_tests::{
    PLAN, RegistryProcess, Services, audit_api, client_for, sbom_request_for,
    start_configured_node, stella, stella_ok,
};

const REPO: &str = "stella/scanner";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn registry(addr: &str) -> Registry {
    let mut config = RegistryConfig::new(&format!("{addr}/{REPO}"));
    config.insecure = true;
    Registry::new(config).expect("registry client")
}

/// Signs an SBOM that claims to come from `scanner` (None: no claim). Ok(audit id) or the problem.
fn sign(client: &stella_api::Client, scanner: Option<&str>) -> Result<String, stella_api::Problem> {
    let mut body = sbom_request_for(client);
    if let Some(digest) = scanner {
        body["scannerImageDigest"] = json!(digest);
    }
    let request: SignDsseRequest = serde_json::from_value(body).expect("request");
    match client.sign_dsse(&request) {
        Ok(response) => Ok(response.audit_id),
        Err(ClientError::Problem(p)) => Err(p),
        Err(e) => panic!("transport: {e}"),
    }
}

fn refused_with(result: Result<String, stella_api::Problem>, code: &str) -> String {
    match result {
        Ok(id) => panic!("expected {code}, got a signature ({id})"),
        Err(p) => {
            assert_eq!(p.code.as_str(), code, "{}", p.detail);
            p.detail
        }
    }
}

#[test]
fn only_trusted_scanner_releases_get_their_evidence_signed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut reg = RegistryProcess::start();
    let services = Services::start(dir);
    let release_key = stella_signer::FileKeySigner::generate().expect("key");
    let rogue_key = stella_signer::FileKeySigner::generate().expect("key");
    std::fs::write(dir.join("release.pem"), release_key.to_pkcs8_pem()).expect("key");
    std::fs::write(
        dir.join("release.pub.pem"),
        release_key.public_key().to_pem(),
    )
    .expect("pub");
    let signing = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), signing.to_pkcs8_pem());
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing]\nkey_file = \"{d}/signing.pem\"\n\
             [provenance]\nrepository = \"{addr}/{REPO}\"\ninsecure_registry = true\ntrusted_keys = [\"{d}/release.pub.pem\"]\npositive_cache_seconds = 3\nnegative_cache_seconds = 1\nmax_manifest_bytes = 2048\n",
            d = dir.display(),
            addr = reg.addr,
        ),
    );
    let tenant = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let ops_creds = dir.join("ops.json");
    std::fs::write(
        &ops_creds,
        serde_json::to_vec(&services.credentials("operator", PLAN, &node.url)).expect("json"),
    )
    .expect("ops");
    let ops = ops_creds.to_str().expect("utf8");
    let s = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();

    // Scanner images in the registry.
    let rt = runtime();
    let r = registry(&reg.addr);
    let image = |tag: &str| {
        rt.block_on(r.push_image(tag, tag.as_bytes()))
            .expect("push image")
    };
    let [
        signed,
        unsigned,
        rogue,
        misdirected,
        allowed,
        approved,
        cosign,
        malformed,
        oversized,
    ] = ["v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9"].map(image);
    let reference = |digest: &str| format!("{}/{REPO}@{digest}", reg.addr);

    // The release pipeline signs v1 with the release key (CLI, OCI referrer + tag-schema index).
    stella_ok(&[
        "release",
        "sign",
        &reference(&signed),
        "--key",
        &s(&dir.join("release.pem")),
        "--insecure",
    ]);
    let verify = |digest: &str| {
        stella(&[
            "release",
            "verify",
            &reference(digest),
            "--key",
            &s(&dir.join("release.pub.pem")),
            "--insecure",
        ])
        .status
        .code()
    };
    assert_eq!(
        verify(&signed),
        Some(0),
        "stella release verify accepts the signed release"
    );
    assert_eq!(verify(&unsigned), Some(1));
    // v3 is signed by a key nobody trusts; v4 carries a trusted signature over another digest;
    // v7 has a classic cosign signature; v8's referrers tag holds something that is no index;
    // v9's referrer manifest is larger than the node accepts.
    rt.block_on(r.publish(&rogue, &rogue_key)).expect("rogue");
    let other = stella_release::release_bundle(r.repository(), &signed, &release_key)
        .expect("bundle")
        .to_json_pretty()
        .expect("json");
    rt.block_on(r.publish_bundle_bytes(&misdirected, &other))
        .expect("misdirected");
    rt.block_on(r.publish_cosign_classic(&cosign, &cosign, &release_key))
        .expect("cosign");
    let not_an_index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(b"{}"), "size": 2},
        "layers": []
    }))
    .expect("json");
    rt.block_on(r.push_manifest(
        &format!(":sha256-{}", &malformed[7..]),
        &not_an_index,
        OCI_MANIFEST,
    ))
    .expect("malformed tag");
    let padded = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": stella_release::BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [],
        "annotations": {"padding": "x".repeat(4096)}
    }))
    .expect("json");
    let padded_digest = sha256_digest(&padded);
    rt.block_on(r.push_manifest(&format!("@{padded_digest}"), &padded, OCI_MANIFEST))
        .expect("padded");
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": padded_digest, "size": padded.len(), "artifactType": stella_release::BUNDLE_MEDIA_TYPE}
    ]}))
    .expect("json");
    rt.block_on(r.push_manifest(&format!(":sha256-{}", &oversized[7..]), &index, OCI_INDEX))
        .expect("index");

    // --- signing decisions ---
    let signed_id = sign(&tenant, Some(&signed)).expect("a signed scanner release is trusted");
    refused_with(sign(&tenant, None), "release_untrusted");
    let detail = refused_with(sign(&tenant, Some(&unsigned)), "release_untrusted");
    assert!(detail.contains("no release signature"), "{detail}");
    refused_with(sign(&tenant, Some(&rogue)), "release_untrusted");
    let detail = refused_with(sign(&tenant, Some(&misdirected)), "release_untrusted");
    assert!(
        detail.contains("subject") || detail.contains("digest"),
        "{detail}"
    );
    let cosign_id = sign(&tenant, Some(&cosign)).expect("a classic cosign signature counts");
    let detail = refused_with(sign(&tenant, Some(&malformed)), "release_untrusted");
    assert!(detail.contains("malformed"), "{detail}");
    let detail = refused_with(sign(&tenant, Some(&oversized)), "release_untrusted");
    assert!(detail.contains("limit"), "{detail}");
    let detail = refused_with(sign(&tenant, Some("sha256:XYZ")), "invalid_request");
    assert!(detail.contains("sha256"), "{detail}");

    // Allowlist (operator).
    refused_with(sign(&tenant, Some(&allowed)), "release_untrusted");
    stella_ok(&[
        "release",
        "allow",
        &allowed,
        "--reason",
        "vendor build, offline site",
        "--credentials",
        ops,
    ]);
    let allowed_id = sign(&tenant, Some(&allowed)).expect("allowlisted");
    // A tenant cannot allowlist.
    let tenant_file = dir.join("tenant.json");
    std::fs::write(
        &tenant_file,
        serde_json::to_vec(tenant.credentials()).expect("json"),
    )
    .expect("creds");
    let out = stella(&[
        "release",
        "allow",
        &unsigned,
        "--reason",
        "please",
        "--credentials",
        &s(&tenant_file),
    ]);
    assert!(!out.status.success());

    // Approval: requested by the tenant, approved by an operator, valid until it expires.
    let out = stella_ok(&[
        "release",
        "request-approval",
        &approved,
        "--reason",
        "hotfix scanner",
        "--for",
        "4s",
        "--credentials",
        &s(&tenant_file),
    ]);
    let approval: Value = serde_json::from_slice(&out.stdout).expect("json");
    let approval_id = approval["approvalId"].as_str().expect("id").to_owned();
    refused_with(sign(&tenant, Some(&approved)), "release_untrusted");
    stella_ok(&[
        "release",
        "approve",
        &approval_id,
        "--reason",
        "checked the diff",
        "--credentials",
        ops,
    ]);
    let approved_id = sign(&tenant, Some(&approved)).expect("approved");
    let out = stella(&[
        "release",
        "deny",
        &approval_id,
        "--reason",
        "too late",
        "--credentials",
        ops,
    ]);
    assert!(
        !out.status.success(),
        "a decided approval cannot be decided again"
    );

    // The signer's report, through the API.
    let out = stella_ok(&["release", "status", &signed, "--credentials", ops]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["trusted"], true);
    assert_eq!(report["signatures"][0]["verified"], true);
    assert_eq!(report["signatures"][0]["kind"], "sigstore-bundle");
    let out = stella(&["release", "status", &oversized, "--credentials", ops]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["trusted"], false);
    assert!(
        !report["problems"].as_array().expect("problems").is_empty(),
        "{report}"
    );

    // Registry outage: within the cache window signing goes on; after it, 503. (Wait out the
    // window first, so that the next signing fetches a fresh verdict and starts a new one.)
    std::thread::sleep(Duration::from_millis(3200));
    sign(&tenant, Some(&signed)).expect("warm the cache");
    reg.stop();
    sign(&tenant, Some(&signed)).expect("cached verdict within the window");
    std::thread::sleep(Duration::from_millis(3200));
    refused_with(sign(&tenant, Some(&signed)), "signing_unavailable");
    // The approval has lapsed meanwhile (4 s).
    refused_with(sign(&tenant, Some(&approved)), "signing_unavailable");
    reg.restart();
    sign(&tenant, Some(&signed)).expect("registry back");
    refused_with(sign(&tenant, Some(&approved)), "release_untrusted");

    // The audit log names the path that admitted each scanner release.
    let mut operator = services.credentials("operator", PLAN, &node.url);
    operator.server = node.url.clone();
    let page = audit_api(&client_for(&node.url, operator), "limit=1000");
    let records = page["records"].as_array().expect("records");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["auditId"] == id)
            .cloned()
            .expect("record")
    };
    let key_id = release_key.public_key().key_id();
    assert_eq!(
        by_id(&signed_id)["provenance"],
        format!("signature:{key_id}")
    );
    assert_eq!(
        by_id(&cosign_id)["provenance"],
        format!("signature:{key_id}")
    );
    assert_eq!(by_id(&allowed_id)["provenance"], "allowlist");
    assert_eq!(
        by_id(&approved_id)["provenance"],
        format!("approval:{approval_id}")
    );
    let refusals = records
        .iter()
        .filter(|r| {
            r["decision"] == "denied"
                && r["reason"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("release_untrusted"))
        })
        .count();
    assert!(refusals >= 8, "refusals are audited: {refusals}");
    let changes: Vec<&str> = records
        .iter()
        .filter(|r| r["decision"] == "configured")
        .filter_map(|r| r["poeState"].as_str())
        .collect();
    assert_eq!(
        changes,
        [
            "release_allowed",
            "release_approval_requested",
            "release_approval_decided"
        ]
    );
}

/// The OCI 1.1 referrers API, against a stand-in that speaks it (Debian's registry does not):
/// a release signature found through it is trusted; a 5xx from it is reported, never read as
/// "no signatures"; a 404 (no referrers API) falls back to the tag schema.
#[test]
fn the_referrers_api_finds_release_signatures_and_its_errors_are_reported() {
    let stand_in = stella_tests::ReferrersRegistry::start();
    let repository = format!("{}/{REPO}", stand_in.addr);
    let release_key = stella_signer::FileKeySigner::generate().expect("key");
    let image = sha256_digest(b"scanner image 1.2.3");

    // A release bundle for the image, as a referrer: blob, manifest and the referrers index.
    let bundle = stella_release::release_bundle(&repository, &image, &release_key).expect("bundle");
    let blob = serde_json::to_vec(&bundle).expect("bundle json");
    let blob_digest = sha256_digest(&blob);
    stand_in.put("blobs", &blob_digest, &blob);
    let empty = b"{}";
    stand_in.put("blobs", &sha256_digest(empty), empty);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": stella_release::BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256_digest(empty), "size": 2},
        "layers": [{"mediaType": stella_release::BUNDLE_MEDIA_TYPE, "digest": blob_digest, "size": blob.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": 1}
    }))
    .expect("manifest");
    let manifest_digest = sha256_digest(&manifest);
    stand_in.put("manifests", &manifest_digest, &manifest);
    stand_in.put_referrers(
        &image,
        &serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
                "artifactType": stella_release::BUNDLE_MEDIA_TYPE}]
        }))
        .expect("index"),
    );

    let mut config = RegistryConfig::new(&repository);
    config.insecure = true;
    let registry = Registry::new(config).expect("registry client");
    let keys = [release_key.public_key().clone()];
    let rt = runtime();
    let look = |step: &str| {
        let discovery = rt
            .block_on(registry.discover(&image))
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        stella_release::verify(&discovery, &image, &keys)
    };

    let found = look("found");
    assert!(found.trusted, "found through the referrers API: {found:?}");
    assert!(found.problems.is_empty(), "{found:?}");

    // A registry that wants the anonymous token flow (as public registries do) works the same.
    stand_in.require_token("pull-token-1");
    let with_token = look("token");
    assert!(with_token.trusted, "through the token flow: {with_token:?}");

    // The referrers API fails: reported as a problem, and nothing is trusted on its silence.
    stand_in.referrers_status(503);
    let failed = look("503");
    assert!(!failed.trusted, "{failed:?}");
    assert!(
        failed.problems.iter().any(|p| p.contains("referrers API")),
        "a 5xx is reported: {failed:?}"
    );

    // No referrers API at all (404): the tag schema is asked instead. Its index here is larger
    // than the limit: it is reported, and never read whole.
    stand_in.referrers_status(404);
    let hex = image.trim_start_matches("sha256:");
    let mut oversized = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []
    }))
    .expect("index");
    oversized.resize(300 * 1024, b' ');
    stand_in.put("manifests", &format!("sha256-{hex}"), &oversized);
    let unsupported = look("404");
    assert!(!unsupported.trusted, "{unsupported:?}");
    assert!(
        unsupported
            .problems
            .iter()
            .any(|p| p.contains("over the 262144-byte limit")),
        "an oversized manifest is a problem, not a read: {unsupported:?}"
    );
    assert!(
        !unsupported
            .problems
            .iter()
            .any(|p| p.contains("referrers API")),
        "a registry without the API is not an error: {unsupported:?}"
    );
}
