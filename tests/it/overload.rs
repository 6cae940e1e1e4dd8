//! Load shedding: a node with its bound of signing requests in progress refuses the next one at
//! once with a retryable 503 (problem+json, `Retry-After`), having done no work for it, so the
//! very same request signs once the node has room; and a body that trickles in cannot hold a
//! place at the front door past the request deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use stella_tests::{Client, PLAN, Services, client_for, sbom_request_for, start_configured_node};

const SIGN: &str = "/api/v1/signer/sign/dsse";

/// A signing request whose head (with valid credentials) was sent and whose chunked body never
/// ends: the node authenticates it and then waits for the body, holding its place.
fn stalled_request(client: &Client, url: &str) -> TcpStream {
    let auth: String = client
        .auth_headers("POST", &format!("{url}{SIGN}"))
        .expect("auth")
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let addr = url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let head = format!(
        "POST {SIGN} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream
}

/// A configured node (signing with a key file, with these `[limits]`) and a client that has
/// signed once already, so it holds the node's DPoP nonce and a token.
struct Signing {
    node: stella_tests::NodeProcess,
    client: Client,
    request: stella_api::SignDsseRequest,
    services: Services,
    /// Kept until the test ends: the node's files live in it.
    _dir: tempfile::TempDir,
}

fn signing_node(limits: &str) -> Signing {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let services = Services::start(dir);
    let key = stella_signer::FileKeySigner::generate().expect("key");
    stella_tests::write_secret(dir.join("signing.pem"), key.to_pkcs8_pem());
    let node = start_configured_node(
        dir,
        &services,
        &format!(
            "[signing]\nkey_file = \"{}/signing.pem\"\n[limits]\n{limits}",
            dir.display()
        ),
    );
    let client = client_for(
        &node.url,
        services.credentials("tenant-a-ci", PLAN, &node.url),
    );
    let request = serde_json::from_value(sbom_request_for(&client)).expect("request");
    client.sign_dsse(&request).expect("first signing");
    Signing {
        node,
        client,
        request,
        services,
        _dir: tmp,
    }
}

/// One HTTP/1.1 response with a `content-length` body, read from a raw stream.
fn read_response(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{url}/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_node_at_its_bound_sheds_at_once_and_the_same_request_signs_when_there_is_room() {
    let s = signing_node(
        "max_inflight_signings = 2\nmax_inflight_per_tenant = 2\nrequest_deadline_seconds = 300\n",
    );
    let (node, client) = (&s.node, &s.client);
    let body = serde_json::to_vec(&sbom_request_for(client)).expect("body");

    let stalled: Vec<TcpStream> = (0..2).map(|_| stalled_request(client, &node.url)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&node.url, "stella_signer_inflight_signings") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled requests never got in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The third request is refused before any work: 503, problem+json, Retry-After.
    let url = format!("{}{SIGN}", node.url);
    let headers = client.auth_headers("POST", &url).expect("auth");
    let send = |headers: &[(&'static str, String)]| {
        let mut post = reqwest::blocking::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in headers {
            post = post.header(*name, value);
        }
        post.send().expect("send")
    };
    let started = Instant::now();
    let refused = send(&headers);
    let took = started.elapsed();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = refused.json().expect("problem");
    assert_eq!(problem["code"], "signing_unavailable", "{problem}");
    assert!(
        took < Duration::from_secs(30),
        "a refusal does not wait: {took:?}"
    );
    assert!(metric(&node.url, "stella_signer_shed_total") >= 1.0);

    // Room again: the same request (same DPoP proof, so nothing about it was consumed) signs.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = send(&headers);
        match answer.status().as_u16() {
            200 => break,
            503 => assert!(Instant::now() < deadline, "the node never had room again"),
            other => panic!("{other}: {}", answer.text().unwrap_or_default()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_body_that_trickles_in_is_cut_off_at_the_request_deadline() {
    let s = signing_node("max_inflight_signings = 1\nrequest_deadline_seconds = 1\n");
    let (node, client, request) = (&s.node, &s.client, &s.request);

    let mut stalled = stalled_request(client, &node.url);
    let text = read_response(&mut stalled);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("did not arrive within 1 s"), "{text}");
    // Its place at the front door was given back: the one place signs again.
    client.sign_dsse(request).expect("signs after the cut-off");
}

#[test]
fn one_tenant_cannot_take_every_place_at_the_door() {
    let s = signing_node(
        "max_inflight_signings = 4\nmax_inflight_per_tenant = 1\nrequest_deadline_seconds = 300\n",
    );
    let (node, client, services) = (&s.node, &s.client, &s.services);
    let _stalled = stalled_request(client, &node.url);
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&node.url, "stella_signer_inflight_signings") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled request never got in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Tenant A holds its one place: its next request is throttled at once, with Retry-After.
    let url = format!("{}{SIGN}", node.url);
    let mut post = reqwest::blocking::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&sbom_request_for(client)).expect("body"));
    for (name, value) in client.auth_headers("POST", &url).expect("auth") {
        post = post.header(name, value);
    }
    let refused = post.send().expect("send");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem: Value = refused.json().expect("problem");
    assert_eq!(problem["code"], "plan_throttled", "{problem}");
    // Tenant B is not A: it signs meanwhile.
    let other = client_for(
        &node.url,
        services.credentials("tenant-b-ci", PLAN, &node.url),
    );
    let request = serde_json::from_value(sbom_request_for(&other)).expect("request");
    other
        .sign_dsse(&request)
        .expect("tenant B signs while A holds its share");
}
