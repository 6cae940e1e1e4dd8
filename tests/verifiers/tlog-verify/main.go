// tlog-verify checks Stella Signer's audit-log checkpoints and proofs with the Go checksum
// database's own packages (golang.org/x/mod/sumdb/note and sumdb/tlog), code this project did
// not write. It reads one JSON request on stdin:
//
//	{"verifierKey": "<origin>+<id>+<key>",
//	 "checkpoint": "<signed note>",
//	 "inclusion": [{"index": 0, "record": "<base64 record bytes>", "proof": ["<hex>", ...]}],
//	 "consistency": [{"checkpoint": "<older signed note>", "proof": ["<hex>", ...]}]}
//
// and exits 0 only if the note signature verifies, every record is included in the checkpoint's
// tree and every older checkpoint is a prefix of it. It prints what failed otherwise.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	VerifierKey string `json:"verifierKey"`
	Checkpoint  string `json:"checkpoint"`
	Inclusion   []struct {
		Index  int64    `json:"index"`
		Record string   `json:"record"`
		Proof  []string `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		Checkpoint string   `json:"checkpoint"`
		Proof      []string `json:"proof"`
	} `json:"consistency"`
}

type tree struct {
	size int64
	root tlog.Hash
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlog-verify: "+format+"\n", args...)
	os.Exit(1)
}

// open verifies the note with the log key and parses its C2SP checkpoint body.
func open(verifier note.Verifier, msg string) tree {
	n, err := note.Open([]byte(msg), note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint note: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != verifier.Name() {
		fail("checkpoint body: origin is not %q", verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		fail("checkpoint body: bad size %q", lines[1])
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		fail("checkpoint body: bad root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], raw)
	return tree{size, root}
}

func hashes(in []string) []tlog.Hash {
	out := make([]tlog.Hash, len(in))
	for i, s := range in {
		raw, err := hex.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			fail("proof hash %d is not 32 bytes of hex", i)
		}
		copy(out[i][:], raw)
	}
	return out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail("request: %v", err)
	}
	verifier, err := note.NewVerifier(req.VerifierKey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	head := open(verifier, req.Checkpoint)
	for _, inc := range req.Inclusion {
		record, err := base64.StdEncoding.DecodeString(inc.Record)
		if err != nil {
			fail("record %d: %v", inc.Index, err)
		}
		proof := tlog.RecordProof(hashes(inc.Proof))
		if err := tlog.CheckRecord(proof, head.size, head.root, inc.Index, tlog.RecordHash(record)); err != nil {
			fail("record %d is not in the tree of size %d: %v", inc.Index, head.size, err)
		}
	}
	for _, con := range req.Consistency {
		old := open(verifier, con.Checkpoint)
		if old.size > head.size {
			fail("rollback: the older checkpoint has %d records, the newer %d", old.size, head.size)
		}
		proof := tlog.TreeProof(hashes(con.Proof))
		if err := tlog.CheckTree(proof, head.size, head.root, old.size, old.root); err != nil {
			fail("the tree of size %d is not a prefix of the tree of size %d: %v", old.size, head.size, err)
		}
	}
	fmt.Printf("ok: checkpoint %d, %d inclusion, %d consistency\n", head.size, len(req.Inclusion), len(req.Consistency))
}
