//! Test harness: runs the real `stella-signer` and `stella` binaries as processes on loopback.
//!
//! Binaries are found next to the test executable (`target/<profile>/`), or in
//! `STELLA_BIN_DIR`; `scripts/test.sh` builds them before the tests run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STELLA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A running `stella-signer` process whose stdout (JSON logs) is captured.
pub struct NodeProcess {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// `stella-signer serve --dev --data-dir DIR --listen 127.0.0.1:0`
    pub fn start_dev(data_dir: &Path) -> NodeProcess {
        let args = [
            "serve",
            "--dev",
            "--data-dir",
            data_dir.to_str().expect("utf8 path"),
            "--listen",
            "127.0.0.1:0",
        ];
        NodeProcess::start(&args, data_dir)
    }

    pub fn start(args: &[&str], data_dir: &Path) -> NodeProcess {
        let mut child = Command::new(bin("stella-signer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stella-signer");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("stella-signer ready") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        let ready = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("wait");
                panic!(
                    "node did not become ready; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        let ready: Value = serde_json::from_str(&ready).expect("ready line is JSON");
        let url = ready["url"].as_str().expect("url in ready line").to_owned();
        NodeProcess {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("node did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dev_dir(&self) -> PathBuf {
        self.data_dir.join("dev")
    }

    pub fn public_key_path(&self) -> PathBuf {
        self.dev_dir().join("signing-key.pub.pem")
    }

    pub fn token(&self) -> String {
        let creds = stella_api::Credentials::load(&self.dev_dir()).expect("dev credentials");
        creds.token
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `stella` CLI.
pub fn stella(args: &[&str]) -> Output {
    Command::new(bin("stella"))
        .args(args)
        .output()
        .expect("run stella")
}

/// Runs `stella-signer audit verify` and returns its JSON.
pub fn audit_verify(data_dir: &Path) -> Result<Value, String> {
    let out = Command::new(bin("stella-signer"))
        .args([
            "audit",
            "verify",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("run audit verify");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Every audit record of a stopped node (`stella-signer audit export`).
pub fn audit_records(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(bin("stella-signer"))
        .args([
            "audit",
            "export",
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ])
        .output()
        .expect("run audit export");
    assert!(
        out.status.success(),
        "audit export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Audit records through a running node's API (`GET /api/v1/signer/audit`).
pub fn audit_api(url: &str, token: &str, query: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("{url}/api/v1/signer/audit?{query}"))
        .bearer_auth(token)
        .send()
        .expect("audit request")
        .json()
        .expect("audit json")
}

/// Independent verifiers shipped in `tests/verifiers/` (sigstore-js and openssl).
pub struct Verifiers;

impl Verifiers {
    fn dir() -> PathBuf {
        repo_root().join("tests").join("verifiers")
    }

    /// `@sigstore/verify` on a bundle, with the key registered under its hint.
    pub fn sigstore_js(bundle: &Path, key: &Path, artifact: Option<&Path>) -> (bool, String) {
        assert!(
            Self::dir()
                .join("node_modules")
                .join("@sigstore")
                .join("verify")
                .exists(),
            "tests/verifiers/node_modules is missing: run `npm ci` there (scripts/test.sh does)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(Self::dir().join("verify-bundle.mjs"))
            .arg("--bundle")
            .arg(bundle)
            .arg("--key")
            .arg(key);
        if let Some(a) = artifact {
            cmd.arg("--artifact").arg(a);
        }
        report(cmd.output().expect("run node"))
    }

    /// `openssl dgst -sha256 -verify` over the PAE bytes of signature `index`.
    pub fn openssl(envelope: &Path, key: &Path) -> (bool, String) {
        let out = Command::new("bash")
            .arg(Self::dir().join("openssl-verify-envelope.sh"))
            .arg(envelope)
            .arg(key)
            .output()
            .expect("run openssl script");
        report(out)
    }
}

fn report(out: Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

/// A sign request body for raw HTTP tests.
pub fn sbom_request_json() -> Value {
    serde_json::json!({
        "subject": [{"name": "registry.example/app", "digest": {"sha256": "a".repeat(64)}}],
        "predicateType": "stella.ops/sbom@v1",
        "predicate": {"format": "cyclonedx-json", "digest": format!("sha256:{}", "b".repeat(64)), "componentCount": 3}
    })
}
