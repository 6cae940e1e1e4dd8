//! A node killed with SIGKILL at any instant loses no acknowledged signature: every response
//! that reached a client has its audit record on disk, the chain verifies after restart, and
//! signing continues the chain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use stella_tests::{
    Credentials, NodeProcess, audit_records, audit_verify, authed, client_for, sbom_request_for,
};

fn load(
    url: String,
    creds: Credentials,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Vec<(String, String)> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let caller = client_for(&url, creds);
    let sign_url = format!("{url}/api/v1/signer/sign/dsse");
    let body = serde_json::to_vec(&sbom_request_for(&caller)).expect("json");
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = authed(&caller, http.post(&sign_url), "POST", &sign_url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        let Ok(resp) = sent else { break };
        if resp.status().as_u16() != 200 {
            continue;
        }
        let Ok(json) = resp.json::<Value>() else {
            break;
        };
        acked.push((
            json["auditId"].as_str().unwrap_or_default().to_owned(),
            json["bundleSha256"].as_str().unwrap_or_default().to_owned(),
        ));
        count.fetch_add(1, Ordering::Relaxed);
    }
    acked
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let mut all_acked: Vec<(String, String)> = Vec::new();
    for round in 0..3u64 {
        let node = NodeProcess::start_dev(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..6)
            .map(|_| {
                let (url, creds) = (node.url.clone(), node.credentials());
                let (stop, count) = (stop.clone(), count.clone());
                std::thread::spawn(move || load(url, creds, stop, count))
            })
            .collect();
        // Kill under load: once this round has acknowledgements (a condition, so a busy machine
        // only makes it wait longer), then at a different moment each round.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while count.load(Ordering::Relaxed) < 25 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100 * round));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            all_acked.extend(w.join().expect("worker"));
        }
    }
    assert!(
        all_acked.len() > 50,
        "the load should have been acknowledged many times, got {}",
        all_acked.len()
    );

    // After a crash the Raft log is the durable record; one start replays it into the state
    // machine, and a clean stop leaves everything applied on disk.
    let node = NodeProcess::start_dev(&data);
    assert!(node.stop().success());
    let summary = audit_verify(&data).expect("the chain verifies after three SIGKILLs");
    let records = audit_records(&data);
    assert_eq!(summary["records"].as_u64(), Some(records.len() as u64));
    let on_disk: std::collections::HashMap<String, String> = records
        .iter()
        .map(|r| {
            (
                r["auditId"].as_str().unwrap_or_default().to_owned(),
                r["bundleSha256"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for (audit_id, bundle_sha) in &all_acked {
        assert_eq!(
            on_disk.get(audit_id),
            Some(bundle_sha),
            "acknowledged {audit_id} must be on disk with its bundle hash"
        );
    }
    let unique: std::collections::HashSet<_> = all_acked.iter().map(|(id, _)| id).collect();
    assert_eq!(
        unique.len(),
        all_acked.len(),
        "no audit id was handed out twice"
    );

    // The node restarts on the same data and continues the chain. Entries that reached the Raft
    // log but were not yet applied when the process died are applied now, so the chain may grow
    // by a few records nobody was answered for — never the other way round.
    let node = NodeProcess::start_dev(&data);
    let caller = node.client();
    let resp = caller
        .sign_dsse(&serde_json::from_value(sbom_request_for(&caller)).expect("request"))
        .expect("sign");
    let next_id = resp.audit_id.clone();
    assert!(
        next_id > stella_state::audit::audit_id(records.len() as u64),
        "{next_id} continues the chain"
    );
    assert!(node.stop().success());
    let after = audit_records(&data);
    assert_eq!(
        after.last().and_then(|r| r["auditId"].as_str()),
        Some(next_id.as_str())
    );
    assert_eq!(
        &after[..records.len()],
        &records[..],
        "nothing already committed changed"
    );
    audit_verify(&data).expect("the chain verifies after the restart");
}
