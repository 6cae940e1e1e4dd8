//! Configured (non-dev) mode: TOML config, TLS on by default, callers admitted by the
//! Authority and licensing stand-ins.

use std::path::Path;
use std::process::Command;

use stella_tests::{NodeProcess, PLAN, Services, bin, repo_root, stella, stella_ok};

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_pki(dir: &Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=stella test CA",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").expect("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
}

#[test]
fn a_configured_node_serves_tls_and_the_cli_signs_through_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    make_pki(dir);
    let key = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), key.to_pkcs8_pem());
    std::fs::write(dir.join("signing.pub.pem"), key.public_key().to_pem()).expect("pub file");
    let services = Services::start(dir);
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n[tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n[limits]\nmax_body_bytes = 65536\n[signing]\nkey_file = \"{d}/signing.pem\"\n{admission}",
        data = dir.join("data").display(),
        d = dir.display(),
        admission = services.node_toml(&[(PLAN, 1000, 8, 1024 * 1024)], ""),
    );
    std::fs::write(dir.join("node.toml"), &config).expect("config");
    let config_path = dir.join("node.toml");
    let node = NodeProcess::start(
        &["serve", "--config", config_path.to_str().expect("utf8")],
        &dir.join("data"),
    );
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);

    // tenant-b may sign and read its own audit records, not other tenants'.
    let creds = services.credentials("tenant-b-ci", PLAN, &node.url);
    std::fs::write(
        dir.join("creds.json"),
        serde_json::to_vec(&creds).expect("json"),
    )
    .expect("creds");
    let sbom = repo_root().join("examples/sbom.cdx.json");
    let bundle = dir.join("b.json");
    let s = |p: &Path| p.to_str().expect("utf8").to_owned();
    stella_ok(&[
        "sign",
        "sbom",
        &s(&sbom),
        "--credentials",
        &s(&dir.join("creds.json")),
        "--ca-cert",
        &s(&dir.join("ca.pem")),
        "--bundle",
        &s(&bundle),
    ]);
    assert!(
        stella(&[
            "verify",
            &s(&sbom),
            "--bundle",
            &s(&bundle),
            "--key",
            &s(&dir.join("signing.pub.pem"))
        ])
        .status
        .success()
    );

    // Without the CA the client refuses the server; plain HTTP to the TLS port gets no answer.
    let untrusted = stella(&[
        "sign",
        "sbom",
        &s(&sbom),
        "--credentials",
        &s(&dir.join("creds.json")),
    ]);
    assert!(!untrusted.status.success());
    let plain = node.url.replace("https://", "http://");
    let plain_result = reqwest::blocking::Client::new()
        .get(format!("{plain}/healthz"))
        .send();
    assert!(plain_result.is_err() || !plain_result.expect("resp").status().is_success());

    // Audit API: a tenant that is not an auditor sees its own records only, page by page.
    let creds_path = dir.join("creds.json");
    let page_as = |creds_path: &Path, query: &str| {
        let out = stella(
            &[
                "audit",
                "--credentials",
                creds_path.to_str().expect("utf8"),
                "--ca-cert",
                dir.join("ca.pem").to_str().expect("utf8"),
            ]
            .into_iter()
            .chain(query.split_whitespace())
            .collect::<Vec<_>>(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("record"))
            .collect::<Vec<_>>()
    };
    let page = |query: &str| page_as(&creds_path, query);
    let first = page("--limit 1 --tenant someone-else");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0]["tenant"], "tenant-b",
        "the tenant filter cannot reach other tenants"
    );
    let stale = page("--consistency stale");
    assert!(stale.iter().all(|r| r["tenant"] == "tenant-b") && !stale.is_empty());
    let after_first = page(&format!(
        "--after {}",
        first[0]["auditId"].as_str().expect("id")
    ));
    assert!(
        after_first
            .iter()
            .all(|r| r["seq"].as_u64() > first[0]["seq"].as_u64())
    );

    // `signer.audit.all` counts only for configured auditor tenants (`ops` here): tenant-a's
    // token carries the scope and still reads only its own records; the operator reads all.
    let as_client = |client: &str| {
        let path = dir.join(format!("{client}.json"));
        let creds = services.credentials(client, PLAN, &node.url);
        std::fs::write(&path, serde_json::to_vec(&creds).expect("json")).expect("creds");
        path
    };
    let not_an_auditor = page_as(&as_client("tenant-a-ci"), "--tenant tenant-b");
    assert!(
        not_an_auditor.iter().all(|r| r["tenant"] == "tenant-a"),
        "a scope the Authority granted does not make a tenant an auditor: {not_an_auditor:?}"
    );
    let auditor = page_as(&as_client("operator"), "--tenant tenant-b");
    assert!(!auditor.is_empty() && auditor.iter().all(|r| r["tenant"] == "tenant-b"));

    // The configured body limit applies.
    let mut with_ca = creds.clone();
    with_ca.ca_cert_pem = Some(std::fs::read_to_string(dir.join("ca.pem")).expect("ca"));
    let caller = stella_tests::client_for(&node.url, with_ca);
    let mut big = stella_tests::sbom_request_for(&caller);
    big["predicate"]["padding"] = serde_json::json!("x".repeat(100_000));
    let resp = caller
        .send(
            reqwest::Method::POST,
            stella_api::SIGN_DSSE_PATH,
            &[],
            Some(serde_json::to_vec(&big).expect("json")),
        )
        .expect("post");
    assert_eq!(resp.status().as_u16(), 413);
}

#[test]
fn a_config_without_tls_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n[signing]\nkey_file = \"/tmp/k.pem\"\n",
    )
    .expect("write");
    let out = Command::new(bin("stella-signer"))
        .args(["serve", "--config", config.to_str().expect("utf8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TLS is on by default"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
