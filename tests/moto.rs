//! moto in server mode (`moto[server]` 5.2.5 in the project venv, installed by
//! `scripts/install-deps.sh`) as the AWS KMS stand-in: started on a free loopback port, waited
//! for until it answers, killed on drop. Keys are made in it with the venv's boto3 — a client
//! independent of the node's SDK. moto 5.2.5 ignores `MessageType` and always hashes the
//! message, so only the `RAW` signing path can be proven against it (the `DIGEST` requests are
//! checked on the wire by the node's unit tests, `node/src/kms/tests.rs`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The region the stand-in's keys are made in.
pub const REGION: &str = "us-east-1";
/// Fixed test credentials; moto accepts any.
pub const ACCESS_KEY_ID: &str = "AKIDSTELLATEST";
pub const SECRET_ACCESS_KEY: &str = "stella-test-secret";

/// The project venv that `scripts/install-deps.sh` creates.
fn venv() -> PathBuf {
    std::env::var_os("STELLA_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/stella-signer/venv")
        },
        PathBuf::from,
    )
}

pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

/// A key made in the stand-in.
#[derive(Debug, Clone)]
pub struct MotoKey {
    pub arn: String,
    /// SubjectPublicKeyInfo DER, as moto's `GetPublicKey` gives it.
    pub spki_der: Vec<u8>,
}

impl MotoServer {
    /// Whether `moto_server` is in the project venv.
    pub fn installed() -> bool {
        venv().join("bin").join("moto_server").exists()
    }

    /// `None` when moto is not installed (a note is printed); under CI that is a failure.
    pub fn start() -> Option<MotoServer> {
        let program = venv().join("bin").join("moto_server");
        if !MotoServer::installed() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the KMS tests: scripts/install-deps.sh installs moto into {}",
                venv().display()
            );
            eprintln!(
                "moto is not installed (scripts/install-deps.sh): KMS tests against it skipped"
            );
            return None;
        }
        let port = crate::free_port("127.0.0.1");
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = MotoServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = format!("{}/moto-api/", server.url);
        while Instant::now() < deadline {
            if reqwest::blocking::get(&probe).is_ok_and(|r| r.status().is_success()) {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not come up on {}", server.url);
    }

    /// The environment a node (or a CLI) needs to reach the stand-in: static credentials and
    /// no instance-metadata look-ups.
    pub fn env() -> [(&'static str, &'static str); 4] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_REGION", REGION),
        ]
    }

    /// `[signing.kms]` for a node using the stand-in.
    pub fn node_toml(&self) -> String {
        format!(
            "[signing.kms]\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\n",
            self.url
        )
    }

    /// Creates a key of `spec` and `usage` with boto3 and reads its public key.
    pub fn create_key(&self, spec: &str, usage: &str) -> MotoKey {
        let script = r#"
import base64, sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name=sys.argv[2])
key = kms.create_key(KeySpec=sys.argv[3], KeyUsage=sys.argv[4])["KeyMetadata"]
public = kms.get_public_key(KeyId=key["KeyId"])["PublicKey"]
print(key["Arn"], base64.b64encode(public).decode())
"#;
        let out = Command::new(venv().join("bin").join("python"))
            .args(["-c", script, &self.url, REGION, spec, usage])
            .envs(MotoServer::env())
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "creating a {spec} key in moto: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut parts = text.split_whitespace();
        let arn = parts.next().expect("arn").to_owned();
        use base64::Engine;
        let spki_der = base64::engine::general_purpose::STANDARD
            .decode(parts.next().expect("public key"))
            .expect("base64");
        MotoKey { arn, spki_der }
    }

    /// Freezes the stand-in (SIGSTOP): KMS stops answering, as in a network outage, and keeps
    /// its keys for [`MotoServer::resume`].
    pub fn pause(&self) {
        crate::send_signal(&self.child, rustix::process::Signal::STOP);
    }

    /// Lets a paused stand-in answer again (SIGCONT).
    pub fn resume(&self) {
        crate::send_signal(&self.child, rustix::process::Signal::CONT);
    }

    /// Takes the stand-in down (a KMS outage; its keys are gone with it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
