//! The audit log as a transparency log (format v6): the Merkle tree's right edge, the tree head
//! the leader last cut for signing, and the last signed checkpoint — replicated, so every node
//! has the same root at the same size and serves the same checkpoint.
//!
//! A checkpoint takes two entries, because signing happens outside `apply` and records keep
//! arriving while the leader signs: `CutCheckpoint` fixes the tree head (size and root, from the
//! frontier: pure), then `SignCheckpoint` attaches the leader's signed note over exactly that
//! head. `apply` checks that the note's size and root lines are the cut's; the note signature is
//! the leader's to make and every reader's to verify (ADR 0016).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::merkle::{Frontier, Hash, Node};

/// A tree size and its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    pub size: u64,
    pub root: Hash,
}

/// A signed checkpoint: the head and the C2SP signed note over it, byte for byte as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub head: TreeHead,
    /// When the leader cut the head (ms since the epoch, from the command).
    pub cut_at_ms: u64,
    pub note: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogTree {
    pub frontier: Frontier,
    pub cut: Option<(TreeHead, u64)>,
    pub checkpoint: Option<SignedCheckpoint>,
    /// Subtree hashes completed since storage last took them.
    #[serde(skip)]
    new_nodes: Vec<(Node, Hash)>,
}

/// Equal when the replicated parts are (the nodes not yet stored are storage's business).
impl PartialEq for LogTree {
    fn eq(&self, other: &LogTree) -> bool {
        self.frontier == other.frontier
            && self.cut == other.cut
            && self.checkpoint == other.checkpoint
    }
}

impl Eq for LogTree {}

/// Why `SignCheckpoint` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointRefusal {
    /// No head was cut, or another head was cut since.
    NotTheCut,
    /// The note's body does not name the cut's size and root.
    NoteMismatch,
    /// A checkpoint of this size or larger is already signed.
    NotNewer,
}

impl LogTree {
    /// Adds a committed record (its canonical bytes) as the next leaf.
    pub fn push_record(&mut self, canonical: &[u8]) {
        let nodes = self.frontier.push(crate::merkle::leaf_hash(canonical));
        self.new_nodes.extend(nodes);
    }

    pub fn head(&self) -> TreeHead {
        TreeHead {
            size: self.frontier.size(),
            root: self.frontier.root(),
        }
    }

    /// The subtree hashes to store since the last call.
    pub fn take_nodes(&mut self) -> Vec<(Node, Hash)> {
        std::mem::take(&mut self.new_nodes)
    }

    /// Fixes the current head for signing.
    pub fn cut(&mut self, now_ms: u64) -> TreeHead {
        let head = self.head();
        self.cut = Some((head, now_ms));
        head
    }

    /// Records the signed note over the cut head.
    pub fn sign(&mut self, head: TreeHead, note: &str) -> Result<(), CheckpointRefusal> {
        let Some((cut, cut_at_ms)) = self.cut else {
            return Err(CheckpointRefusal::NotTheCut);
        };
        if cut != head {
            return Err(CheckpointRefusal::NotTheCut);
        }
        if !body_names(note, &head) {
            return Err(CheckpointRefusal::NoteMismatch);
        }
        if self
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.head.size >= head.size)
        {
            return Err(CheckpointRefusal::NotNewer);
        }
        self.checkpoint = Some(SignedCheckpoint {
            head,
            cut_at_ms,
            note: note.to_owned(),
        });
        self.cut = None;
        Ok(())
    }
}

/// Whether a signed note's body is a checkpoint of `head`: origin line, decimal size, base64 root
/// (C2SP tlog-checkpoint), then optional extension lines, a blank line and signatures.
pub fn body_names(note: &str, head: &TreeHead) -> bool {
    let mut lines = note.split('\n');
    let origin_ok = lines.next().is_some_and(|o| !o.is_empty());
    let size_ok = lines.next() == Some(head.size.to_string().as_str());
    let root = base64::engine::general_purpose::STANDARD.encode(head.root);
    let root_ok = lines.next() == Some(root.as_str());
    origin_ok && size_ok && root_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note_for(head: &TreeHead) -> String {
        let root = base64::engine::general_purpose::STANDARD.encode(head.root);
        format!(
            "example.org/log\n{}\n{root}\n\n— example.org/log AAAA\n",
            head.size
        )
    }

    #[test]
    fn a_cut_head_takes_its_note_once_and_only_that_note() {
        let mut tree = LogTree::default();
        tree.push_record(b"one");
        tree.push_record(b"two");
        assert_eq!(tree.take_nodes().len(), 3);
        let head = tree.cut(1_000);
        assert_eq!(head.size, 2);
        tree.push_record(b"three");
        let other = TreeHead {
            size: 3,
            root: tree.frontier.root(),
        };
        assert_eq!(
            tree.sign(other, &note_for(&other)),
            Err(CheckpointRefusal::NotTheCut)
        );
        let wrong = TreeHead {
            size: 2,
            root: [0; 32],
        };
        assert_eq!(
            tree.sign(head, &note_for(&wrong)),
            Err(CheckpointRefusal::NoteMismatch)
        );
        assert_eq!(tree.sign(head, &note_for(&head)), Ok(()));
        assert_eq!(tree.checkpoint.as_ref().map(|c| c.head), Some(head));
        assert_eq!(
            tree.sign(head, &note_for(&head)),
            Err(CheckpointRefusal::NotTheCut)
        );
        // An older head cut again is not newer than what is signed.
        let mut older = tree.clone();
        older.checkpoint.as_mut().expect("checkpoint").head.size = 5;
        let again = older.cut(2_000);
        assert_eq!(
            older.sign(again, &note_for(&again)),
            Err(CheckpointRefusal::NotNewer)
        );
    }
}
