//! The transparency log's view of the audit log: after the heal, every node's signed checkpoint
//! (`GET /api/v1/signer/audit/checkpoint`, a C2SP signed note) verifies with the published
//! checkpoint key (the trust material's `auditLog.verifierKey`), all nodes name the same tree
//! size and root hash, and that root is the RFC 9162 root of the node's own audit records — so a
//! node whose tree drifted from its records, or from the others', is named. Pure: no I/O.

use stella_signer::note::open_checkpoint;
use stella_state::AuditRecord;
use stella_state::merkle::{Frontier, leaf_hash};

use super::{NodeLog, Tally, Verdict};

/// One node's current checkpoint note, or why it could not be read.
#[derive(Debug, Clone)]
pub struct NodeCheckpoint {
    pub node: usize,
    pub note: Result<String, String>,
}

/// The RFC 9162 root of the first `size` records (`None`: fewer records than that).
pub fn records_root(records: &[AuditRecord], size: u64) -> Option<[u8; 32]> {
    let size = usize::try_from(size).ok()?;
    let mut tree = Frontier::default();
    for r in records.get(..size)? {
        tree.push(leaf_hash(&r.to_canonical_line()));
    }
    Some(tree.root())
}

/// The tree size a checkpoint note names, without verifying it (to wait until nodes agree).
pub fn note_size(note: &str) -> Option<u64> {
    note.lines().nth(1)?.parse().ok()
}

/// `checkpoints-identical`: see the module comment. `verifier_key`: the published key
/// (`None`: the cluster publishes none, which fails the invariant — it cannot be checked).
pub fn verdict(
    checkpoints: &[NodeCheckpoint],
    verifier_key: Option<&str>,
    logs: &[NodeLog],
) -> Verdict {
    let mut t = Tally::new();
    let name = "checkpoints-identical";
    let description = "after the heal every node's signed checkpoint verifies with the published key, names the same tree size and root, and that root is the Merkle root of the node's own audit records";
    let Some(key) = verifier_key else {
        t.check(false, || {
            "the trust material publishes no checkpoint key (auditLog.verifierKey)".to_owned()
        });
        return t.verdict(name, description);
    };
    let mut opened = Vec::new();
    for c in checkpoints {
        let checkpoint = match &c.note {
            Ok(note) => open_checkpoint(note, key).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        t.check(checkpoint.is_ok(), || {
            format!(
                "node {}: no verifying checkpoint ({})",
                c.node,
                checkpoint.as_ref().err().cloned().unwrap_or_default()
            )
        });
        if let Ok(cp) = checkpoint {
            opened.push((c.node, cp));
        }
    }
    // The reference: the (size, root) most nodes name (the first such, on a tie).
    let mut counts: Vec<((u64, [u8; 32]), usize)> = Vec::new();
    for (_, cp) in &opened {
        match counts.iter_mut().find(|(k, _)| *k == (cp.size, cp.root)) {
            Some((_, n)) => *n += 1,
            None => counts.push(((cp.size, cp.root), 1)),
        }
    }
    let reference = counts
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(std::cmp::Ordering::Greater))
        .map(|(k, _)| *k);
    for (node, cp) in &opened {
        if let Some((size, root)) = reference {
            t.check(cp.size == size && cp.root == root, || {
                format!(
                    "node {node}: size {} root {}, the others' size {size} root {}",
                    cp.size,
                    hex::encode(cp.root),
                    hex::encode(root)
                )
            });
        }
        let own = logs
            .iter()
            .find(|l| l.node == *node)
            .and_then(|l| l.records.as_ref().ok())
            .map(|records| records_root(records, cp.size));
        t.check(matches!(own, Some(Some(r)) if r == cp.root), || {
            format!(
                "node {node}: its checkpoint root {} at size {} is not the root of its own audit records ({})",
                hex::encode(cp.root),
                cp.size,
                match own {
                    None => "its log could not be read".to_owned(),
                    Some(None) => "it holds fewer records".to_owned(),
                    Some(Some(r)) => format!("they give {}", hex::encode(r)),
                }
            )
        });
    }
    t.verdict(name, description)
}

#[cfg(test)]
mod tests {
    use stella_signer::note::LogKey;
    use stella_state::{AuditDraft, Decision};

    use super::*;

    fn records(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let draft = AuditDraft {
                time: "2026-12-02T05:00:00Z".into(),
                request_id: format!("chaos-tenant-a-0-{i}"),
                tenant: "tenant-a".into(),
                caller_subject: "ci".into(),
                issuer: "https://authority.test".into(),
                subject_digests: Vec::new(),
                predicate_type: "stella.ops/sbom@v1".into(),
                key_id: "k".into(),
                key_source: "file".into(),
                signing_mode: "keyful".into(),
                poe_state: "valid".into(),
                plan: None,
                provenance: None,
                certificate_serial: None,
                decision: Decision::Signed,
                reason: "signed".into(),
                bundle_sha256: Some(format!("b{i}")),
                statement_sha256: None,
                signatures: Vec::new(),
            };
            let prev = out.last().map(|r| (r.seq, r.hash.clone()));
            out.push(AuditRecord::chain(
                draft,
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
            ));
        }
        out
    }

    fn key() -> LogKey {
        let pem = LogKey::generate_pkcs8_pem().expect("key");
        LogKey::from_pkcs8_pem("signer.test/log", &pem).expect("log key")
    }

    fn logs(records: &[AuditRecord], nodes: usize) -> Vec<NodeLog> {
        (1..=nodes)
            .map(|node| NodeLog {
                node,
                records: Ok(records.to_vec()),
            })
            .collect()
    }

    fn at(node: usize, key: &LogKey, size: u64, root: [u8; 32]) -> NodeCheckpoint {
        NodeCheckpoint {
            node,
            note: Ok(key.sign_checkpoint(size, &root).expect("sign")),
        }
    }

    #[test]
    fn identical_verifying_checkpoints_of_the_records_hold() {
        let (key, records) = (key(), records(5));
        let root = records_root(&records, 4).expect("root");
        let cps: Vec<NodeCheckpoint> = (1..=3).map(|n| at(n, &key, 4, root)).collect();
        assert_eq!(note_size(cps[0].note.as_ref().expect("note")), Some(4));
        let v = verdict(&cps, Some(&key.verifier_key()), &logs(&records, 3));
        assert!(v.holds, "{:?}", v.examples);
        assert_eq!(v.checked, 3 + 3 + 3);
    }

    #[test]
    fn a_node_with_another_root_or_size_is_named() {
        let (key, records) = (key(), records(5));
        let root = records_root(&records, 4).expect("root");
        let mut cps: Vec<NodeCheckpoint> = (1..=3).map(|n| at(n, &key, 4, root)).collect();
        cps[1] = at(2, &key, 4, [7u8; 32]);
        let v = verdict(&cps, Some(&key.verifier_key()), &logs(&records, 3));
        assert!(!v.holds);
        assert!(
            v.examples.iter().all(|e| e.starts_with("node 2:")),
            "{:?}",
            v.examples
        );
        assert_eq!(v.violations, 2, "other root, and not its records' root");
        let mut cps: Vec<NodeCheckpoint> = (1..=3).map(|n| at(n, &key, 4, root)).collect();
        cps[2] = at(3, &key, 5, records_root(&records, 5).expect("root"));
        let v = verdict(&cps, Some(&key.verifier_key()), &logs(&records, 3));
        assert_eq!(v.violations, 1, "{:?}", v.examples);
        assert!(
            v.examples[0].starts_with("node 3: size 5"),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn a_checkpoint_that_does_not_verify_or_a_missing_key_fails() {
        let (key, other, records) = (key(), key(), records(3));
        let root = records_root(&records, 3).expect("root");
        let mut cps: Vec<NodeCheckpoint> = (1..=3).map(|n| at(n, &key, 3, root)).collect();
        cps[0] = at(1, &other, 3, root);
        let v = verdict(&cps, Some(&key.verifier_key()), &logs(&records, 3));
        assert_eq!(v.violations, 1);
        assert!(v.examples[0].starts_with("node 1: no verifying checkpoint"));
        cps[0].note = Err("connection refused".into());
        assert!(!verdict(&cps, Some(&key.verifier_key()), &logs(&records, 3)).holds);
        assert!(!verdict(&cps, None, &logs(&records, 3)).holds);
    }

    #[test]
    fn a_root_that_is_not_the_nodes_records_is_named() {
        let (key, records) = (key(), records(4));
        let root = records_root(&records, 4).expect("root");
        let cps: Vec<NodeCheckpoint> = (1..=3).map(|n| at(n, &key, 4, root)).collect();
        let mut logs = logs(&records, 3);
        let mut tampered = records.clone();
        tampered[1].draft.tenant = "tenant-z".into();
        logs[2].records = Ok(tampered);
        let v = verdict(&cps, Some(&key.verifier_key()), &logs);
        assert_eq!(v.violations, 1, "{:?}", v.examples);
        assert!(v.examples[0].starts_with("node 3: its checkpoint root"));
    }
}
