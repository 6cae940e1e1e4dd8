#!/usr/bin/env python3
"""A stand-in OCI registry that speaks the distribution-spec referrers API, for the test suite.

Usage: oci-referrers-server.py DIR

Debian's registry has no referrers API, so this one serves it from files the test writes:
  GET /v2/                                  200 {}
  GET /v2/<name>/referrers/<digest>         the status in DIR/referrers-status (default 200);
                                            on 200 the index DIR/referrers/<digest>.json, or an
                                            empty index (the spec's answer when there are none)
  GET /v2/<name>/manifests/<reference>      DIR/manifests/<reference> (media type from its JSON),
                                            else 404 MANIFEST_UNKNOWN
  GET /v2/<name>/blobs/<digest>             DIR/blobs/<digest>, else 404 BLOB_UNKNOWN
on 127.0.0.1 and an ephemeral port, written to DIR/port once it listens. With DIR/require-token
present, every /v2/ call needs `Authorization: Bearer <its content>`, else 401 with the
distribution token-flow challenge; GET /token answers {"token": ...} anonymously.
"""

import http.server
import json
import os
import sys

INDEX = "application/vnd.oci.image.index.v1+json"


def main():
    root = sys.argv[1]

    class Handler(http.server.BaseHTTPRequestHandler):
        # Keep-alive, as registries do (every answer carries its Content-Length).
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", content_type="application/json", digest=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def missing(self, code):
            body = json.dumps({"errors": [{"code": code, "message": "unknown"}]}).encode()
            self.answer(404, body)

        def do_GET(self):
            path = self.path.split("?")[0]
            token_file = os.path.join(root, "require-token")
            if os.path.exists(token_file):
                token = open(token_file).read().strip()
                if path == "/token":
                    return self.answer(200, json.dumps({"token": token}).encode())
                if self.headers.get("Authorization") != "Bearer " + token:
                    port = self.server.server_address[1]
                    self.send_response(401)
                    self.send_header(
                        "WWW-Authenticate",
                        'Bearer realm="http://127.0.0.1:%d/token",service="stand-in",scope="repository:stella/scanner:pull"' % port,
                    )
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            if path in ("/v2/", "/v2"):
                return self.answer(200, b"{}")
            parts = path.split("/")
            if len(parts) < 5 or parts[1] != "v2":
                return self.missing("NAME_UNKNOWN")
            kind, ref = parts[-2], parts[-1]
            safe = ref.replace("/", "_")
            if kind == "referrers":
                status_file = os.path.join(root, "referrers-status")
                status = int(open(status_file).read().strip()) if os.path.exists(status_file) else 200
                if status != 200:
                    return self.answer(status, b'{"errors":[{"code":"UNKNOWN","message":"stand-in"}]}')
                index = os.path.join(root, "referrers", safe + ".json")
                if os.path.exists(index):
                    return self.answer(200, open(index, "rb").read(), INDEX)
                empty = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": []})
                return self.answer(200, empty.encode(), INDEX)
            if kind == "manifests":
                file = os.path.join(root, "manifests", safe)
                if not os.path.exists(file):
                    return self.missing("MANIFEST_UNKNOWN")
                body = open(file, "rb").read()
                try:
                    media_type = json.loads(body).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
                except ValueError:
                    media_type = "application/vnd.oci.image.manifest.v1+json"
                return self.answer(200, body, media_type)
            if kind == "blobs":
                file = os.path.join(root, "blobs", safe)
                if not os.path.exists(file):
                    return self.missing("BLOB_UNKNOWN")
                return self.answer(200, open(file, "rb").read(), "application/octet-stream", ref)
            return self.missing("NAME_UNKNOWN")

        do_HEAD = do_GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = os.path.join(root, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, os.path.join(root, "port"))
    server.serve_forever()


if __name__ == "__main__":
    main()
