#!/usr/bin/env node
// verify-keyless.mjs — offline check of a *keyless* Sigstore bundle v0.3 with the official
// sigstore-js libraries (@sigstore/bundle + @sigstore/verify), against a trusted_root.json.
//
// Usage: node verify-keyless.mjs --bundle BUNDLE.json --trusted-root ROOT.json
//            --identity SAN --issuer OIDC_ISSUER [--artifact FILE]
//
// Requires one verified RFC 3161 timestamp (timestampThreshold 1): sigstore-js checks the
// certificate chain against the root's certificateAuthorities at the time the timestamp vouches
// for, then the SAN and the Fulcio issuer extension against the policy. No tlog or SCT is
// required (the signer runs without Rekor/CT; see ADR 0010).
// Prints "OK ..." and exits 0 on success, "FAIL <reason>" and exits 1 otherwise.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bundleFromJSON, BUNDLE_V03_MEDIA_TYPE } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toSignedEntity, toTrustMaterial, Verifier } from '@sigstore/verify';

function fail(reason) {
  console.log(`FAIL ${reason}`);
  process.exit(1);
}

try {
  const { values: args } = parseArgs({
    options: {
      bundle: { type: 'string' },
      'trusted-root': { type: 'string' },
      identity: { type: 'string' },
      issuer: { type: 'string' },
      artifact: { type: 'string' },
    },
  });
  if (!args.bundle || !args['trusted-root'] || !args.identity || !args.issuer) {
    fail('usage: node verify-keyless.mjs --bundle B --trusted-root R --identity SAN --issuer ISS');
  }
  const json = JSON.parse(readFileSync(args.bundle, 'utf8'));
  if (json.mediaType !== BUNDLE_V03_MEDIA_TYPE) {
    fail(`mediaType is ${JSON.stringify(json.mediaType)}, want ${BUNDLE_V03_MEDIA_TYPE}`);
  }
  const bundle = bundleFromJSON(json);
  if (bundle.verificationMaterial.content?.$case !== 'certificate') {
    fail(`verificationMaterial is ${bundle.verificationMaterial.content?.$case}, want certificate`);
  }
  const root = TrustedRoot.fromJSON(JSON.parse(readFileSync(args['trusted-root'], 'utf8')));
  const verifier = new Verifier(toTrustMaterial(root), {
    tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 1,
  });
  const signer = verifier.verify(toSignedEntity(bundle), {
    subjectAlternativeName: args.identity,
    extensions: { issuer: args.issuer },
  });
  if (args.artifact) {
    const env = bundle.content.dsseEnvelope;
    const want = createHash('sha256').update(readFileSync(args.artifact)).digest('hex');
    const subjects = JSON.parse(env.payload.toString('utf8')).subject ?? [];
    if (!subjects.some((s) => s?.digest?.sha256 === want)) {
      fail(`artifact sha256 ${want} is not a subject of the statement`);
    }
  }
  console.log(`OK keyless ${signer.identity?.subjectAlternativeName} via ${signer.identity?.extensions?.issuer}`);
} catch (e) {
  fail(`${e.code ?? e.name}: ${e.message}`);
}
