//! The KMS back-end against a tiny KMS-protocol listener of the test's own, which records the
//! exact requests the SDK sends. moto (the end-to-end stand-in) ignores `MessageType` and
//! always hashes, so the `DIGEST` path is proven here, by what goes on the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::Digest;
use stella_signer::{FileKeySigner, KeySigner};

use super::*;

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// What the fake answers, changed by the test between calls.
struct Behaviour {
    key: FileKeySigner,
    /// Signs with this key instead (a KMS answering with the wrong key).
    signing_key: Option<FileKeySigner>,
    key_spec: &'static str,
    key_usage: &'static str,
    /// The PAE whose SHA-256 a `DIGEST` request must carry (the fake signs the PAE itself).
    pae: Vec<u8>,
    /// An error answer instead of a result: (HTTP status, `__type`).
    error: Option<(u16, &'static str)>,
    /// Read the request and never answer.
    silent: bool,
}

struct FakeKms {
    url: String,
    /// (`X-Amz-Target`, JSON body) of every request, in order.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl FakeKms {
    fn start() -> FakeKms {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            key: FileKeySigner::generate().expect("key"),
            signing_key: None,
            key_spec: "ECC_NIST_P256",
            key_usage: "SIGN_VERIFY",
            pae: Vec::new(),
            error: None,
            silent: false,
        }));
        let (s, b) = (seen.clone(), behaviour.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (s, b) = (s.clone(), b.clone());
                std::thread::spawn(move || serve(stream, &s, &b));
            }
        });
        FakeKms {
            url,
            seen,
            behaviour,
        }
    }

    fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().expect("lock"));
    }

    fn requests(&self, target: &str) -> Vec<Value> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == target)
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn client(&self, operation_timeout: Duration) -> Arc<KmsClient> {
        let settings = KmsSettings {
            endpoint_url: Some(self.url.clone()),
            operation_timeout,
            attempt_timeout: operation_timeout.min(DEFAULT_ATTEMPT_TIMEOUT),
            ..KmsSettings::new("eu-west-1")
        };
        KmsClient::connect_with_credentials(settings, test_credentials()).expect("client")
    }
}

fn test_credentials() -> Credentials {
    Credentials::new("AKIDSTELLATEST", "stella-test-secret", None, None, "test")
}

/// Keep-alive HTTP/1.1: one request after another on the connection, until it closes.
fn serve(stream: TcpStream, seen: &Mutex<Vec<(String, Value)>>, behaviour: &Mutex<Behaviour>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut target = String::new();
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "x-amz-target" => target = value.trim().to_owned(),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock()
            .expect("lock")
            .push((target.clone(), body.clone()));
        let (status, answer) = {
            let b = behaviour.lock().expect("lock");
            if b.silent {
                continue;
            }
            answer(&b, &target, &body)
        };
        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(b: &Behaviour, target: &str, body: &Value) -> (u16, Value) {
    if let Some((status, kind)) = b.error {
        return (
            status,
            json!({"__type": kind, "message": "the fake says no"}),
        );
    }
    match target {
        "TrentService.GetPublicKey" => (
            200,
            json!({
                "KeyId": KEY_ARN,
                "PublicKey": STANDARD.encode(b.key.public_key().spki_der()),
                "KeySpec": b.key_spec,
                "KeyUsage": b.key_usage,
                "SigningAlgorithms": ["ECDSA_SHA_256"],
            }),
        ),
        "TrentService.Sign" => {
            let message = body["Message"]
                .as_str()
                .and_then(|m| STANDARD.decode(m).ok())
                .unwrap_or_default();
            let signed_over = match body["MessageType"].as_str() {
                Some("DIGEST") if sha2::Sha256::digest(&b.pae).as_slice() == message => {
                    b.pae.clone()
                }
                Some("DIGEST") => b"not the digest asked for".to_vec(),
                _ => message,
            };
            let key = b.signing_key.as_ref().unwrap_or(&b.key);
            let signature = key.sign(&signed_over).expect("sign").signature;
            (
                200,
                json!({
                    "KeyId": KEY_ARN,
                    "Signature": STANDARD.encode(signature),
                    "SigningAlgorithm": "ECDSA_SHA_256",
                }),
            )
        }
        _ => (400, json!({"__type": "UnknownOperationException"})),
    }
}

#[test]
fn raw_for_1_to_4096_bytes_and_the_digest_otherwise_is_what_the_sdk_sends() {
    let kms = FakeKms::start();
    let signer = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect("open");
    let expected_key = kms.behaviour.lock().expect("lock").key.public_key().clone();
    assert_eq!(signer.descriptor().public_key, expected_key);
    assert_eq!(signer.descriptor().key_id, expected_key.key_id());
    assert_eq!(signer.descriptor().source.as_str(), "kms");
    assert_eq!(
        kms.requests("TrentService.GetPublicKey")[0]["KeyId"],
        KEY_ARN
    );
    for len in [0usize, 100, 4096, 4097, 1 << 20] {
        let pae: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        kms.set(|b| b.pae = pae.clone());
        let op = signer.sign(&pae).expect("signed");
        assert!(op.public_key.verify(&pae, &op.signature), "{len}");
        let sent = kms
            .requests("TrentService.Sign")
            .pop()
            .expect("a Sign request");
        assert_eq!(sent["KeyId"], KEY_ARN);
        assert_eq!(sent["SigningAlgorithm"], "ECDSA_SHA_256");
        if (1..=4096).contains(&len) {
            assert_eq!(sent["MessageType"], "RAW", "{len}");
            assert_eq!(sent["Message"], STANDARD.encode(&pae), "{len}");
        } else {
            assert_eq!(sent["MessageType"], "DIGEST", "{len}");
            assert_eq!(
                sent["Message"],
                STANDARD.encode(sha2::Sha256::digest(&pae)),
                "{len}"
            );
        }
    }
}

#[test]
fn keys_that_are_not_p256_sign_verify_keys_are_refused() {
    let kms = FakeKms::start();
    kms.set(|b| b.key_spec = "RSA_2048");
    let e = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect_err("rsa");
    assert!(matches!(e, KmsError::Unsuitable { .. }), "{e}");
    kms.set(|b| {
        b.key_spec = "ECC_NIST_P256";
        b.key_usage = "ENCRYPT_DECRYPT";
    });
    let e = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect_err("usage");
    assert!(e.to_string().contains("SIGN_VERIFY"), "{e}");
    let e = KmsKeySigner::open(kms.client(Duration::from_secs(5)), "no such\nkey").expect_err("");
    assert!(matches!(e, KmsError::Refused(_)), "{e}");
}

#[test]
fn a_signature_by_another_key_never_leaves_the_back_end() {
    let kms = FakeKms::start();
    let signer = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect("open");
    kms.set(|b| b.signing_key = Some(FileKeySigner::generate().expect("key")));
    let e = signer.sign(b"pae").expect_err("wrong key");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn refusals_are_not_retried_outages_are_retried_within_bounds() {
    let kms = FakeKms::start();
    let signer = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect("open");
    kms.set(|b| b.error = Some((400, "DisabledException")));
    let e = signer.sign_pae(b"pae").expect_err("disabled");
    assert!(
        matches!(e, KmsError::Refused(_)) && !e.is_transient(),
        "{e}"
    );
    assert_eq!(kms.requests("TrentService.Sign").len(), 1, "not retried");
    kms.set(|b| b.error = Some((500, "KMSInternalException")));
    let e = signer.sign_pae(b"pae").expect_err("internal error");
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        kms.requests("TrentService.Sign").len(),
        1 + DEFAULT_MAX_ATTEMPTS as usize,
        "retried up to the attempt limit"
    );
    // Through the KeySigner trait, every failure is the signer's `Signing` error (503 in node).
    let e = signer.sign(b"pae").expect_err("internal error");
    assert!(matches!(e, SignerError::Signing(_)), "{e}");
}

#[test]
fn a_silent_or_absent_kms_fails_within_its_bound_and_the_request_deadline() {
    let kms = FakeKms::start();
    let signer = KmsKeySigner::open(kms.client(Duration::from_secs(1)), KEY_ARN).expect("open");
    kms.set(|b| b.silent = true);
    let started = Instant::now();
    let e = signer.sign_pae(b"pae").expect_err("silent");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Within a signing whose deadline is near, the call gets only what is left.
    let kms = FakeKms::start();
    let signer = KmsKeySigner::open(kms.client(Duration::from_secs(5)), KEY_ARN).expect("open");
    kms.set(|b| b.silent = true);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(400);
    let e = crate::backends::within_deadline(deadline, || signer.sign_pae(b"pae"))
        .expect_err("past the deadline");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let e = crate::backends::within_deadline(Instant::now(), || signer.sign_pae(b"pae"))
        .expect_err("no time left");
    assert!(e.to_string().contains("deadline"), "{e}");
    // Nobody listening: refused connections are an outage, not a hang.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let settings = KmsSettings {
        endpoint_url: Some(closed),
        operation_timeout: Duration::from_secs(2),
        ..KmsSettings::new("eu-west-1")
    };
    let client = KmsClient::connect_with_credentials(settings, test_credentials()).expect("client");
    let started = Instant::now();
    let e = KmsKeySigner::open(client, KEY_ARN).expect_err("nobody there");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_dropped_inside_an_async_context_does_not_panic() {
    let kms = FakeKms::start();
    let client = kms.client(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move { drop(client) });
}
