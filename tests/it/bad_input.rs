//! Hostile input: every mistake gets problem+json with a stable code, never a panic or a 500,
//! and the node keeps serving afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};
use stella_tests::{Client, NodeProcess, authed, sbom_request_for};

const SIGN: &str = "/api/v1/signer/sign/dsse";

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

enum Auth<'a> {
    Nothing,
    /// A fresh token + DPoP proof from this client.
    As(&'a Client),
    /// This exact `Authorization` header.
    Header(&'a str),
}

fn post(node: &NodeProcess, auth: Auth<'_>, content_type: Option<&str>, body: Vec<u8>) -> Answer {
    let http = reqwest::blocking::Client::new();
    let url = format!("{}{SIGN}", node.url);
    let mut req = http.post(&url).body(body);
    match auth {
        Auth::Nothing => {}
        Auth::As(client) => req = authed(client, req, "POST", &url),
        Auth::Header(value) => req = req.header("authorization", value),
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = serde_json::from_slice(&resp.bytes().expect("body")).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

fn assert_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["code"], code);
    assert_eq!(answer.body["status"], status);
    assert!(
        answer.body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with(code))
    );
    assert!(
        answer.body["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[test]
fn every_bad_request_gets_its_stable_problem_code() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let client = node.client();
    let json_ct = Some("application/json");
    let good = serde_json::to_vec(&sbom_request_for(&client)).expect("json");

    // Authentication comes first.
    assert_problem(
        &post(&node, Auth::Nothing, json_ct, good.clone()),
        401,
        "invalid_token",
    );
    assert_problem(
        &post(
            &node,
            Auth::Header("Bearer forged-token"),
            json_ct,
            good.clone(),
        ),
        401,
        "invalid_token",
    );

    // Body shape.
    assert_problem(
        &post(&node, Auth::As(&client), json_ct, b"{not json".to_vec()),
        400,
        "invalid_request",
    );
    assert_problem(
        &post(&node, Auth::As(&client), json_ct, Vec::new()),
        400,
        "invalid_request",
    );
    assert_problem(
        &post(&node, Auth::As(&client), json_ct, b"[1,2,3]".to_vec()),
        400,
        "invalid_request",
    );
    let mut unknown_field = sbom_request_for(&client);
    unknown_field["surprise"] = json!(true);
    assert_problem(
        &post(
            &node,
            Auth::As(&client),
            json_ct,
            serde_json::to_vec(&unknown_field).expect("json"),
        ),
        400,
        "invalid_request",
    );
    let mut bad_digest = sbom_request_for(&client);
    bad_digest["subject"][0]["digest"]["sha256"] = json!("ZZZ");
    assert_problem(
        &post(
            &node,
            Auth::As(&client),
            json_ct,
            serde_json::to_vec(&bad_digest).expect("json"),
        ),
        400,
        "invalid_request",
    );
    let mut bad_predicate = sbom_request_for(&client);
    bad_predicate["predicate"]["componentCount"] = json!("many");
    assert_problem(
        &post(
            &node,
            Auth::As(&client),
            json_ct,
            serde_json::to_vec(&bad_predicate).expect("json"),
        ),
        400,
        "invalid_request",
    );

    // Unknown predicate type.
    let mut unknown_type = sbom_request_for(&client);
    unknown_type["predicateType"] = json!("https://slsa.dev/provenance/v1");
    assert_problem(
        &post(
            &node,
            Auth::As(&client),
            json_ct,
            serde_json::to_vec(&unknown_type).expect("json"),
        ),
        400,
        "unsupported_predicate_type",
    );

    // Content type.
    assert_problem(
        &post(&node, Auth::As(&client), Some("text/plain"), good.clone()),
        415,
        "unsupported_media_type",
    );
    assert_problem(
        &post(&node, Auth::As(&client), None, good.clone()),
        415,
        "unsupported_media_type",
    );

    // Oversized body (default limit 1 MiB), declared by Content-Length.
    let mut huge = sbom_request_for(&client);
    huge["predicate"]["padding"] = json!("x".repeat(2 * 1024 * 1024));
    assert_problem(
        &post(
            &node,
            Auth::As(&client),
            json_ct,
            serde_json::to_vec(&huge).expect("json"),
        ),
        413,
        "artifact_too_large",
    );

    // Routing.
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("{}/api/v1/signer/nope", node.url))
        .send()
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let r = http.get(format!("{}{SIGN}", node.url)).send().expect("get");
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().expect("problem json");
    assert_eq!(body["code"], "method_not_allowed");

    // The audit API's query string is input too.
    for query in [
        "limit=ten",
        "limit=0",
        "after=yesterday",
        "consistency=eventual",
        "surprise=1",
    ] {
        let url = format!("{}/api/v1/signer/audit", node.url);
        let r = authed(&client, http.get(format!("{url}?{query}")), "GET", &url)
            .send()
            .expect("audit");
        assert_eq!(r.status().as_u16(), 400, "{query}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let body: Value = r.json().expect("problem json");
        assert_eq!(body["code"], "invalid_request", "{query}");
    }
    let r = http
        .get(format!("{}/api/v1/signer/audit", node.url))
        .send()
        .expect("audit");
    assert_eq!(r.status().as_u16(), 401);

    // The embedded dev Authority answers malformed token requests in OAuth's own error shape.
    let r = http
        .post(format!("{}/dev/authority/token", node.url))
        .header("content-type", "text/plain")
        .body("grant_type")
        .send()
        .expect("token");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().expect("OAuth error json");
    assert_eq!(body["error"], "invalid_request");

    // Still alive and signing, and nothing above was a 5xx.
    let ok = post(&node, Auth::As(&client), json_ct, good);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        node.logs().iter().all(|l| !l.contains("\"status\":500")),
        "no request may end in a 500"
    );
}

#[test]
fn an_oversized_chunked_body_without_content_length_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = NodeProcess::start_dev(&tmp.path().join("data"));
    let client = node.client();
    let auth: String = client
        .auth_headers("POST", &format!("{}{SIGN}", node.url))
        .expect("auth")
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "POST {SIGN} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    let chunk = vec![b' '; 64 * 1024];
    // Send up to 2 MiB of whitespace; the node answers (and may close) once the limit is passed.
    for _ in 0..32 {
        let frame = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk.clone(),
            b"\r\n".to_vec(),
        ]
        .concat();
        if stream.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("artifact_too_large"), "{text}");
}
