#!/usr/bin/env python3
"""An RFC 3161 Time-Stamping Authority for the test suite, backed by `openssl ts -reply`.

Usage: tsa-server.py DIR

Creates (once) a root CA and an EC P-256 TSA certificate with the critical timeStamping EKU in
DIR, writes DIR/tsa-chain.pem (TSA certificate first, root last), then serves
`POST /` (any path) with `Content-Type: application/timestamp-query` on 127.0.0.1 and an
ephemeral port, answering `application/timestamp-reply`. The port is written to DIR/port once
the server listens. The token is made by OpenSSL's TSA, not by the code under test: the
independent TSA beside the node's own dev TSA (node/src/dev/tsa.rs).

The token embeds the TSA certificate only (the root comes from the trust root). OpenSSL keeps
embedded certificates in the order they were added, and DER wants a SET OF sorted: with two or
more the reply is not DER (strict parsers refuse it; the node re-encodes it). One certificate
is a sorted set whatever the order, so what this TSA sends is strict DER, like Sigstore's.
"""

import http.server
import os
import subprocess
import sys
import tempfile
import threading

MAX_QUERY = 16 * 1024


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def prepare(d):
    if os.path.exists(os.path.join(d, "tsa-chain.pem")):
        return
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(
            "[req]\ndistinguished_name=dn\n[dn]\n"
            "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\n"
            "[tsa]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "root.key", "-subj", "/O=Stella Test/CN=Test TSA Root",
            "-days", "3650", "-extensions", "ca", "-config", "ext.cnf", "-out", "root.crt",
            "-set_serial", "1", cwd=d)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "tsa.key", cwd=d)
    openssl("req", "-new", "-key", "tsa.key", "-subj", "/O=Stella Test/CN=Test TSA",
            "-config", "ext.cnf", "-out", "tsa.csr", cwd=d)
    openssl("x509", "-req", "-in", "tsa.csr", "-CA", "root.crt", "-CAkey", "root.key",
            "-set_serial", "2", "-days", "3650", "-extfile", "ext.cnf", "-extensions", "tsa",
            "-out", "tsa.crt", cwd=d)
    with open(os.path.join(d, "tsa.cnf"), "w") as f:
        f.write(
            "[tsa]\ndefault_tsa = stella\n[stella]\n"
            f"serial = {d}/serial\nsigner_cert = {d}/tsa.crt\n"
            f"signer_key = {d}/tsa.key\nsigner_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.99.1\n"
            "digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\ntsa_name = yes\n"
            "ess_cert_id_chain = no\ness_cert_id_alg = sha256\n"
        )
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(d, "tsa.crt")) as a, open(os.path.join(d, "root.crt")) as b:
        chain = a.read() + b.read()
    with open(os.path.join(d, "tsa-chain.pem"), "w") as f:
        f.write(chain)


def serve(d):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, ctype, body):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Content-Type") != "application/timestamp-query":
                return self.answer(415, "text/plain", b"want application/timestamp-query")
            if length <= 0 or length > MAX_QUERY:
                return self.answer(400, "text/plain", b"bad query length")
            query = self.rfile.read(length)
            with lock, tempfile.TemporaryDirectory() as t:
                q, r = os.path.join(t, "q.tsq"), os.path.join(t, "r.tsr")
                with open(q, "wb") as f:
                    f.write(query)
                done = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"),
                     "-queryfile", q, "-out", r],
                    capture_output=True)
                if done.returncode != 0:
                    return self.answer(400, "text/plain", done.stderr[-500:])
                with open(r, "rb") as f:
                    reply = f.read()
            self.answer(200, "application/timestamp-reply", reply)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(os.path.join(d, "port.tmp"), "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(os.path.join(d, "port.tmp"), os.path.join(d, "port"))
    server.serve_forever()


if __name__ == "__main__":
    directory = os.path.abspath(sys.argv[1])
    os.makedirs(directory, exist_ok=True)
    prepare(directory)
    serve(directory)
