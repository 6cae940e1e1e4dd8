#!/usr/bin/env node
// verify-bundle.mjs — offline check of a *keyful* Sigstore bundle v0.3 with the
// official sigstore-js libraries (@sigstore/bundle + @sigstore/verify).
//
// Usage: node verify-bundle.mjs --bundle BUNDLE.json --key PUB.pem [--artifact FILE]
//
// The PEM key is registered in the trust material under its hint,
// base64(sha256(DER SubjectPublicKeyInfo)), so a bundle whose publicKey.hint
// names another key finds no key and fails. No tlog / CT / TSA is required.
// With --artifact: for a messageSignature bundle the artifact is what is
// verified; for an in-toto DSSE bundle we additionally require that the
// artifact's sha256 is one of the statement's subject digests (the library
// itself does not look at the artifact for DSSE content).
// Prints "OK ..." and exits 0 on success, "FAIL <reason>" and exits 1 otherwise.

import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bundleFromJSON, BUNDLE_V03_MEDIA_TYPE } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toSignedEntity, toTrustMaterial, Verifier } from '@sigstore/verify';

function fail(reason) {
  console.log(`FAIL ${reason}`);
  process.exit(1);
}

function main() {
  const { values: args } = parseArgs({
    options: {
      bundle: { type: 'string' },
      key: { type: 'string' },
      artifact: { type: 'string' },
    },
  });
  if (!args.bundle || !args.key) {
    fail('usage: node verify-bundle.mjs --bundle BUNDLE.json --key PUB.pem [--artifact FILE]');
  }

  // 1. Parse + structurally validate the bundle.
  const json = JSON.parse(readFileSync(args.bundle, 'utf8'));
  if (json.mediaType !== BUNDLE_V03_MEDIA_TYPE) {
    fail(`mediaType is ${JSON.stringify(json.mediaType)}, want ${BUNDLE_V03_MEDIA_TYPE}`);
  }
  const bundle = bundleFromJSON(json);
  if (bundle.verificationMaterial.content?.$case !== 'publicKey') {
    fail(`verificationMaterial is ${bundle.verificationMaterial.content?.$case}, want publicKey`);
  }

  // 2. Trust material: empty trusted root + the given key under its hint.
  const der = createPublicKey(readFileSync(args.key)).export({ type: 'spki', format: 'der' });
  const hint = createHash('sha256').update(der).digest('base64');
  const trustedRoot = TrustedRoot.fromJSON({
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [], ctlogs: [], certificateAuthorities: [], timestampAuthorities: [],
  });
  const trustMaterial = toTrustMaterial(trustedRoot, { [hint]: { rawBytes: der } });

  // 3. Verify signature (and key lookup by hint).
  const artifact = args.artifact ? readFileSync(args.artifact) : undefined;
  if (bundle.content.$case === 'messageSignature' && !artifact) {
    fail('messageSignature bundle needs --artifact');
  }
  const verifier = new Verifier(trustMaterial, {
    tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0,
  });
  verifier.verify(toSignedEntity(bundle, artifact));

  // 4. DSSE + artifact: the artifact must be a subject of the in-toto statement.
  let detail = bundle.content.$case;
  if (bundle.content.$case === 'dsseEnvelope') {
    const env = bundle.content.dsseEnvelope;
    detail += ` payloadType=${env.payloadType}`;
    if (artifact) {
      if (env.payloadType !== 'application/vnd.in-toto+json') {
        fail(`--artifact given but payloadType is ${env.payloadType}`);
      }
      const want = createHash('sha256').update(artifact).digest('hex');
      const subjects = JSON.parse(env.payload.toString('utf8')).subject ?? [];
      if (!subjects.some((s) => s?.digest?.sha256 === want)) {
        fail(`artifact sha256 ${want} is not a subject of the statement`);
      }
      detail += ` subject-sha256=${want}`;
    }
  }
  console.log(`OK ${detail} hint=${hint}`);
}

try {
  main();
} catch (e) {
  const msg = `${e?.message ?? e}`;
  fail(e?.code && !msg.startsWith(e.code) ? `${e.code}: ${msg}` : msg);
}
