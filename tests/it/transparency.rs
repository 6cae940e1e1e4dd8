//! The audit log as a transparency log, checked from outside: every node serves the same signed
//! checkpoint, Go's checksum-database packages (`sumdb/note`, `sumdb/tlog`) verify its note,
//! every signature's inclusion and the consistency of checkpoints across a leader kill, and
//! reject a tampered record, a forked log and a rolled-back checkpoint; `stella audit prove` and
//! `stella audit watch` catch a node whose log was rewritten on disk.

use std::time::{Duration, Instant};

use base64::Engine as _;
use redb::ReadableTable as _;
use serde_json::{Value, json};
use stella_api::InclusionProof;
use stella_tests::{ClusterOptions, TestCluster, Verifiers, stella};

/// A credentials file that points `stella` at node `id`.
fn creds_for(cluster: &TestCluster, id: usize) -> String {
    let path = cluster.dir.path().join(format!("creds-node-{id}.json"));
    let mut credentials = cluster.credentials.clone();
    credentials.server = cluster.api_url(id);
    std::fs::write(&path, serde_json::to_vec(&credentials).expect("json")).expect("creds");
    path.to_str().expect("utf8").to_owned()
}

fn note_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a checkpoint: {note}"))
}

/// Waits until every node in `nodes` serves the same checkpoint, of at least `size` records.
fn same_checkpoint_everywhere(cluster: &TestCluster, nodes: &[usize], size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let notes: Vec<Option<String>> = nodes
            .iter()
            .map(|id| cluster.client(*id).checkpoint().ok())
            .collect();
        if let Some(Some(first)) = notes.first()
            && notes.iter().all(|n| n.as_ref() == Some(first))
            && note_size(first) >= size
        {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "nodes {nodes:?} never served one checkpoint of ≥ {size} records: {notes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Signs through node `id` until it answers 200 (a failover answers 503 meanwhile).
fn signed_via(cluster: &TestCluster, id: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.sign(id) {
            Ok((200, body)) => return body,
            other => assert!(
                Instant::now() < deadline,
                "node {id} never signed: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inclusion_entry(proof: &InclusionProof) -> Value {
    let bytes = serde_json_canonicalizer::to_vec(&proof.record).expect("jcs");
    json!({
        "index": proof.log_index,
        "record": base64::engine::general_purpose::STANDARD.encode(bytes),
        "proof": proof.hashes,
    })
}

fn verifier_key(cluster: &TestCluster) -> String {
    cluster
        .client(1)
        .trust()
        .expect("trust")
        .audit_log
        .expect("the cluster publishes its log key")
        .verifier_key
}

#[test]
fn three_nodes_serve_one_checkpoint_that_go_verifies_across_a_leader_kill() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    cluster.wait_converged(Duration::from_secs(60));
    let vkey = verifier_key(&cluster);
    // tenant-a signs with two keys at once: two signatures, two bundles, one record naming both.
    let (k1, _) = cluster.register_key("k1");
    let (k2, _) = cluster.register_key("k2");
    let signed: Vec<Value> = (1..=3).map(|id| signed_via(&cluster, id)).collect();
    for s in &signed {
        let every: Vec<&str> = s["signerIdentity"]["signatures"]
            .as_array()
            .expect("signatures")
            .iter()
            .map(|x| x["keyId"].as_str().expect("key id"))
            .collect();
        assert_eq!(every, [k1.as_str(), k2.as_str()], "the identity names both");
    }
    let last = signed
        .iter()
        .map(|s| s["logEntry"]["logIndex"].as_u64().expect("a log entry"))
        .max()
        .expect("signed");
    let note1 = same_checkpoint_everywhere(&cluster, &[1, 2, 3], last + 1);
    let size1 = note_size(&note1);

    // Every signature's record is in the checkpoint's tree, found by its bundle hash on any
    // node, and the leaf is the one the sign response named.
    let proofs: Vec<InclusionProof> = signed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let proof = cluster
                .client(i + 1)
                .inclusion_proof(&[
                    (
                        "bundleHash",
                        s["bundleSha256"].as_str().expect("hash").into(),
                    ),
                    ("treeSize", size1.to_string()),
                ])
                .expect("inclusion proof");
            assert_eq!(
                proof.log_index,
                s["logEntry"]["logIndex"].as_u64().expect("present")
            );
            assert_eq!(
                proof.leaf_hash,
                s["logEntry"]["leafHash"].as_str().expect("present")
            );
            assert_eq!(proof.record["bundleSha256"], s["bundleSha256"]);
            proof
        })
        .collect();
    let request = json!({
        "verifierKey": vkey,
        "checkpoint": note1,
        "inclusion": proofs.iter().map(inclusion_entry).collect::<Vec<_>>(),
    });
    let (ok, out) = Verifiers::tlog_verify(&request);
    assert!(
        ok,
        "Go's tlog verifies the checkpoint and inclusions: {out}"
    );

    // A record changed after the fact is not in the tree.
    let mut tampered = proofs[0].clone();
    tampered.record["tenant"] = json!("tenant-z");
    let (ok, out) = Verifiers::tlog_verify(&json!({
        "verifierKey": vkey, "checkpoint": note1, "inclusion": [inclusion_entry(&tampered)],
    }));
    assert!(!ok && out.contains("not in the tree"), "{out}");
    // A checkpoint note whose body was edited does not open.
    let (ok, out) = Verifiers::tlog_verify(&json!({
        "verifierKey": vkey,
        "checkpoint": note1.replacen(&format!("\n{size1}\n"), &format!("\n{}\n", size1 + 1), 1),
    }));
    assert!(!ok && out.contains("checkpoint note"), "{out}");

    // The leader dies; the survivors keep the log and sign on; their checkpoints extend the old.
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    let survivors: Vec<usize> = (1..=3).filter(|id| *id != leader).collect();
    let after: Vec<Value> = survivors
        .iter()
        .map(|id| signed_via(&cluster, *id))
        .collect();
    let last = after
        .iter()
        .map(|s| s["logEntry"]["logIndex"].as_u64().expect("a log entry"))
        .max()
        .expect("signed");
    let note2 = same_checkpoint_everywhere(&cluster, &survivors, last + 1);
    let size2 = note_size(&note2);
    assert!(size2 > size1);
    let consistency = cluster
        .client(survivors[0])
        .consistency_proof(size1, size2)
        .expect("consistency proof");
    let (ok, out) = Verifiers::tlog_verify(&json!({
        "verifierKey": vkey,
        "checkpoint": note2,
        "consistency": [{"checkpoint": note1, "proof": consistency.hashes}],
    }));
    assert!(
        ok,
        "the checkpoints before and after the kill are consistent: {out}"
    );

    // A forked log (one proof hash replaced) and a rolled-back checkpoint are refused.
    let mut forked = consistency.hashes.clone();
    forked[0] = "00".repeat(32);
    let (ok, out) = Verifiers::tlog_verify(&json!({
        "verifierKey": vkey,
        "checkpoint": note2,
        "consistency": [{"checkpoint": note1, "proof": forked}],
    }));
    assert!(!ok && out.contains("not a prefix"), "{out}");
    let (ok, out) = Verifiers::tlog_verify(&json!({
        "verifierKey": vkey,
        "checkpoint": note1,
        "consistency": [{"checkpoint": note2, "proof": []}],
    }));
    assert!(!ok && out.contains("rollback"), "{out}");

    // The public checkpoint needs no token; proofs do.
    let anonymous = reqwest::blocking::get(format!(
        "{}{}",
        cluster.api_url(survivors[0]),
        stella_api::AUDIT_CHECKPOINT_PATH
    ))
    .expect("GET checkpoint");
    assert_eq!(anonymous.status().as_u16(), 200);
    let anonymous = reqwest::blocking::get(format!(
        "{}{}?index=0",
        cluster.api_url(survivors[0]),
        stella_api::AUDIT_INCLUSION_PATH
    ))
    .expect("GET proof");
    assert_eq!(anonymous.status().as_u16(), 401);
}

/// Rewrites record `seq` in a stopped node's state machine (its reason), and recomputes the
/// stored Merkle hashes from the rewritten records — an attacker with the disk who covers
/// their tracks as far as the node's own files go.
fn rewrite_record(raft_dir: &std::path::Path, seq: u64) {
    let audit: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
    let merkle: redb::TableDefinition<(u8, u64), &[u8]> = redb::TableDefinition::new("merkle");
    let db = redb::Database::open(raft_dir.join("state-machine.redb")).expect("open");
    let txn = db.begin_write().expect("txn");
    {
        let mut records = txn.open_table(audit).expect("audit");
        let mut record: Value = {
            let line = records.get(seq).expect("get").expect("the record exists");
            serde_json::from_slice(line.value()).expect("record")
        };
        record["reason"] = json!("rewritten after the fact");
        let line = serde_json_canonicalizer::to_vec(&record).expect("jcs");
        records.insert(seq, line.as_slice()).expect("rewrite");
        let mut nodes = txn.open_table(merkle).expect("merkle");
        let mut store = std::collections::HashMap::new();
        struct Mem<'a>(&'a std::collections::HashMap<(u8, u64), [u8; 32]>);
        impl stella_state::merkle::HashStore for Mem<'_> {
            fn get(&self, level: u8, index: u64) -> Option<[u8; 32]> {
                self.0.get(&(level, index)).copied()
            }
        }
        let lines: Vec<Vec<u8>> = records
            .iter()
            .expect("iter")
            .map(|item| item.expect("row").1.value().to_vec())
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let leaf = stella_state::merkle::leaf_hash(line);
            for (node, hash) in
                stella_state::merkle::append(&Mem(&store), i as u64, leaf).expect("append")
            {
                store.insert(node, hash);
                nodes.insert(node, hash.as_slice()).expect("node");
            }
        }
    }
    txn.commit().expect("commit");
}

#[test]
fn stella_audit_watch_and_prove_catch_a_node_whose_log_was_rewritten_on_disk() {
    let mut cluster = TestCluster::start(ClusterOptions::default());
    cluster.wait_converged(Duration::from_secs(60));
    let vkey_file = cluster.dir.path().join("audit-log.vkey");
    std::fs::write(&vkey_file, verifier_key(&cluster)).expect("vkey");
    let vkey = vkey_file.to_str().expect("utf8").to_owned();
    let first = signed_via(&cluster, 1);
    let size1 = note_size(&same_checkpoint_everywhere(
        &cluster,
        &[1, 2, 3],
        first["logEntry"]["logIndex"].as_u64().expect("entry") + 1,
    ));
    // Two monitors, one per node, each trusting what it saw first.
    let (creds1, creds3) = (creds_for(&cluster, 1), creds_for(&cluster, 3));
    let state1 = cluster.dir.path().join("watch-1.json");
    let state3 = cluster.dir.path().join("watch-3.json");
    for (creds, state) in [(&creds1, &state1), (&creds3, &state3)] {
        let out = stella(&[
            "audit",
            "watch",
            "--once",
            "--credentials",
            creds,
            "--log-key",
            &vkey,
            "--state",
            state.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // More signings; then node 3 is stopped and the first of them rewritten on its disk.
    let target = signed_via(&cluster, 2);
    let target_seq = target["logEntry"]["logIndex"].as_u64().expect("entry") + 1;
    assert!(
        target_seq > size1,
        "the rewritten record is newer than the trusted checkpoint"
    );
    let _ = signed_via(&cluster, 2);
    // SIGTERM: a leader hands leadership over first, so the others keep signing.
    cluster.terminate(3);
    let (status, _) = cluster.reap(3);
    assert!(status.success(), "node 3 stops cleanly");
    rewrite_record(&cluster.data_dir(3).join("raft"), target_seq);
    cluster.restart(3);
    let more = signed_via(&cluster, 1);
    same_checkpoint_everywhere(
        &cluster,
        &[1, 2, 3],
        more["logEntry"]["logIndex"].as_u64().expect("entry") + 1,
    );

    // The honest node's monitor sees the log grow; node 3's sees a fork and says so.
    let honest = stella(&[
        "audit",
        "watch",
        "--once",
        "--credentials",
        &creds1,
        "--log-key",
        &vkey,
        "--state",
        state1.to_str().expect("utf8"),
    ]);
    assert!(
        honest.status.success(),
        "{}",
        String::from_utf8_lossy(&honest.stderr)
    );
    assert!(String::from_utf8_lossy(&honest.stdout).contains("Extended"));
    let rewritten = stella(&[
        "audit",
        "watch",
        "--once",
        "--credentials",
        &creds3,
        "--log-key",
        &vkey,
        "--state",
        state3.to_str().expect("utf8"),
    ]);
    let stderr = String::from_utf8_lossy(&rewritten.stderr);
    assert_eq!(rewritten.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("FORK"), "{stderr}");

    // `stella audit prove` trusts the record only where the log still commits to it.
    let audit_id = target["auditId"].as_str().expect("audit id");
    let proved = stella(&[
        "audit",
        "prove",
        "--credentials",
        &creds1,
        "--log-key",
        &vkey,
        "--audit-id",
        audit_id,
    ]);
    assert!(
        proved.status.success(),
        "{}",
        String::from_utf8_lossy(&proved.stderr)
    );
    assert!(String::from_utf8_lossy(&proved.stdout).contains("included"));
    let refused = stella(&[
        "audit",
        "prove",
        "--credentials",
        &creds3,
        "--log-key",
        &vkey,
        "--audit-id",
        audit_id,
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not"), "{stderr}");
}

/// All records the auditor can read, page by page (plain reads, no index).
fn everything(auditor: &stella_api::Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        query.extend(after.clone().map(|a| ("after", a)));
        let page = auditor.audit(&query).expect("page");
        out.extend(page.records);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Every record of an indexed query, following its cursors with pages of `limit`.
fn indexed(client: &stella_api::Client, filter: &[(&str, String)], limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let mut query = vec![("limit", limit.to_string())];
        match &after {
            Some(cursor) => query.push(("after", cursor.clone())),
            None => query.extend(filter.iter().cloned()),
        }
        let page = client.audit(&query).expect("page");
        assert!(page.records.len() <= limit);
        out.extend(page.records);
        match page.next {
            Some(next) => {
                assert!(next.starts_with("c1."), "an opaque cursor: {next}");
                after = Some(next);
            }
            None => return out,
        }
    }
    panic!("the cursor never ended");
}

fn seqs(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

#[test]
fn look_ups_are_indexed_paged_by_cursor_scoped_to_the_reader_and_exported_as_ndjson() {
    let cluster = TestCluster::start(ClusterOptions::default());
    cluster.wait_converged(Duration::from_secs(60));
    let tenant_b = stella_tests::client_for(
        &cluster.api_url(2),
        cluster
            .services
            .credentials("tenant-b-ci", stella_tests::PLAN, &cluster.api_url(2)),
    );
    let auditor = stella_tests::client_for(
        &cluster.api_url(3),
        cluster
            .services
            .credentials("operator", stella_tests::PLAN, &cluster.api_url(3)),
    );
    let default_key = stella_signer::PublicKey::from_pem_file(&cluster.public_key_path())
        .expect("default key")
        .key_id();
    let sign_b = || {
        let request: stella_api::SignDsseRequest =
            serde_json::from_value(stella_tests::sbom_request_for(&tenant_b)).expect("request");
        tenant_b.sign_dsse(&request).expect("tenant-b signs")
    };
    let early = signed_via(&cluster, 1);
    let (k2, _) = cluster.register_key("k2");
    let a: Vec<Value> = (1..=3).map(|id| signed_via(&cluster, id)).collect();
    let b = [sign_b(), sign_b()];

    let all = everything(&auditor);
    let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        seqs(&all.iter().filter(|r| pred(r)).cloned().collect::<Vec<_>>())
    };
    fn signed_by(key: &str) -> impl Fn(&Value) -> bool + '_ {
        move |r: &Value| {
            r["keyId"] == key
                || r["signatures"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x["keyId"] == key))
        }
    }
    // By key id: the auditor sees every tenant's, in pages of 2 with opaque cursors.
    let by_k2 = indexed(&auditor, &[("keyId", k2.clone())], 2);
    assert_eq!(seqs(&by_k2), expect(&signed_by(&k2)));
    assert_eq!(by_k2.len(), 3);
    let by_default = indexed(&auditor, &[("keyId", default_key.clone())], 2);
    assert_eq!(seqs(&by_default), expect(&signed_by(&default_key)));
    assert!(
        by_default.len() >= 3,
        "tenant-a's first and both of tenant-b's"
    );
    // A tenant asking for the same key sees only its own records.
    let mine = indexed(&tenant_b, &[("keyId", default_key.clone())], 1);
    assert_eq!(
        seqs(&mine),
        expect(&|r: &Value| signed_by(&default_key)(r) && r["tenant"] == "tenant-b")
    );
    assert_eq!(mine.len(), 2);
    // Another tenant's bundle is not found; one's own is.
    let foreign = [(
        "bundleHash",
        a[0]["bundleSha256"].as_str().expect("present").to_owned(),
    )];
    assert!(indexed(&tenant_b, &foreign, 10).is_empty());
    assert_eq!(indexed(&auditor, &foreign, 10).len(), 1);
    let own = [("bundleHash", b[0].bundle_sha256.clone())];
    assert_eq!(
        seqs(&indexed(&tenant_b, &own, 10)),
        [b[0].audit_id[4..].parse::<u64>().expect("present")]
    );
    // By subject and by time range, checked against the whole log.
    let subject = all
        .iter()
        .find(|r| r["auditId"] == early["auditId"])
        .and_then(|r| r["subjectDigests"][0].as_str())
        .expect("a subject digest")
        .to_owned();
    assert_eq!(
        seqs(&indexed(&auditor, &[("subject", subject.clone())], 3)),
        expect(&|r: &Value| r["subjectDigests"]
            .as_array()
            .is_some_and(|s| s.iter().any(|d| d == &json!(subject))))
    );
    let since = all[all.len() / 2]["time"]
        .as_str()
        .expect("time")
        .to_owned();
    let from_second = |t: &str| t.chars().take(19).collect::<String>();
    assert_eq!(
        seqs(&indexed(&auditor, &[("since", since.clone())], 2)),
        expect(
            &|r: &Value| from_second(r["time"].as_str().expect("present")) >= from_second(&since)
        )
    );
    // A forged cursor is refused, not followed.
    let forged = auditor.audit(&[("after", "c1.e30".to_owned())]);
    assert!(
        matches!(forged, Err(stella_api::ClientError::Problem(ref p)) if p.code == stella_api::ProblemCode::InvalidRequest),
        "{forged:?}"
    );

    // Bulk export: every record as NDJSON, then a cursor that continues exactly after them.
    let ops = {
        let path = cluster.dir.path().join("auditor-creds.json");
        let mut creds =
            cluster
                .services
                .credentials("operator", stella_tests::PLAN, &cluster.api_url(3));
        creds.server = cluster.api_url(3);
        std::fs::write(&path, serde_json::to_vec(&creds).expect("json")).expect("creds");
        path.to_str().expect("utf8").to_owned()
    };
    let export = |since: Option<&str>| {
        let mut args = vec!["audit", "export", "--credentials", ops.as_str()];
        if let Some(s) = since {
            args.extend(["--since", s]);
        }
        let out = stella(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let cursor = stderr
            .trim()
            .strip_prefix("next: --since ")
            .unwrap_or_else(|| panic!("no cursor: {stderr}"))
            .to_owned();
        (lines, cursor)
    };
    let (lines, cursor) = export(None);
    assert!(lines.len() >= all.len());
    assert_eq!(seqs(&lines[..all.len()]), seqs(&all));
    let newer = signed_via(&cluster, 1);
    let (lines, _) = export(Some(&cursor));
    let newer_seq = newer["auditId"].as_str().expect("present")[4..]
        .parse::<u64>()
        .expect("present");
    assert!(
        seqs(&lines).contains(&newer_seq),
        "the next export starts after the last"
    );
    assert!(
        seqs(&lines)
            .iter()
            .all(|s| *s > seqs(&all).last().copied().unwrap_or(0))
    );
}
