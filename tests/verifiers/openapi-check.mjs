// Independent check of Stella Signer's OpenAPI 3.1 document and of real responses against it.
//
//   node openapi-check.mjs SPEC.json                 the document is valid OpenAPI 3.1
//   node openapi-check.mjs SPEC.json SAMPLES.ndjson  ... and every sample response validates
//
// The document is checked by @seriousme/openapi-schema-validator (the OpenAPI Initiative's JSON
// Schemas for 3.1, strict); response bodies by Ajv's JSON Schema 2020-12 validator (the dialect
// of OpenAPI 3.1 schemas). A sample is one JSON line:
//   {"method": "GET", "path": "/readyz", "status": 200, "contentType": "...", "body": "<raw>"}
// optionally with "expect": "invalid" for a sample that must be rejected (proves the check
// bites), or "undocumented": true for a route the API does not have (the answer must be the
// document's shared `Problem` response). Exit 0 when everything holds; otherwise every failure is printed and the exit is 1.

import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const [specPath, samplesPath] = process.argv.slice(2);
if (!specPath) {
  console.error("usage: openapi-check.mjs SPEC.json [SAMPLES.ndjson]");
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specPath, "utf8"));
const failures = [];

const validator = new Validator({ strict: true });
const result = await validator.validate(spec);
if (!result.valid) {
  failures.push(`document: not valid OpenAPI ${validator.version}: ${JSON.stringify(result.errors, null, 1)}`);
} else if (validator.version !== "3.1") {
  failures.push(`document: OpenAPI ${validator.version}, expected 3.1`);
}

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
for (const format of ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float", "double"]) {
  ajv.addFormat(format, true);
}
ajv.addSchema(spec, "openapi.json");

const pointer = (...tokens) =>
  tokens.map((t) => encodeURIComponent(String(t).replaceAll("~", "~0").replaceAll("/", "~1"))).join("/");

function resolve(node) {
  while (node && node.$ref) {
    const path = node.$ref.replace(/^#\//, "").split("/").map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
    node = path.reduce((n, t) => (n ? n[t] : undefined), spec);
  }
  return node;
}

function check(sample) {
  const where = `${sample.method} ${sample.path} → ${sample.status}`;
  const method = sample.method.toLowerCase();
  let operation = spec.paths?.[sample.path]?.[method];
  if (sample.undocumented) {
    if (operation) return [`${where}: documented, but the sample says it is not`];
    operation = { responses: { default: { $ref: "#/components/responses/Problem" } } };
    if (!spec.components?.responses?.Problem) return [`${where}: the document has no shared Problem response`];
  }
  if (!spec.paths?.[sample.path] && !sample.undocumented) return [`${where}: path not documented`];
  if (!operation) return [`${where}: method not documented`];
  const status = String(sample.status);
  const key = [status, `${status[0]}XX`, "default"].find((k) => operation.responses?.[k]);
  if (!key) return [`${where}: status not documented`];
  const response = resolve(operation.responses[key]);
  const media = (sample.contentType || "").split(";")[0].trim().toLowerCase();
  const content = response.content?.[media];
  if (!content) {
    return [`${where}: content type ${media || "(none)"} not documented (has ${Object.keys(response.content || {}).join(", ")})`];
  }
  let body;
  if (media.endsWith("json") && media !== "application/x-ndjson") {
    try {
      body = JSON.parse(sample.body);
    } catch (e) {
      return [`${where}: body is not JSON: ${e.message}`];
    }
  } else if (media === "application/x-ndjson") {
    try {
      body = sample.body.split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l));
    } catch (e) {
      return [`${where}: a line is not JSON: ${e.message}`];
    }
  } else {
    body = sample.body;
  }
  if (!content.schema) return [];
  // The response's schema, addressed inside the document so its $refs resolve there.
  const responsePointer =
    operation.responses[key].$ref !== undefined
      ? operation.responses[key].$ref.replace(/^#/, "") + "/" + pointer("content", media, "schema")
      : "/" + pointer("paths", sample.path, method, "responses", key, "content", media, "schema");
  const validate = ajv.compile({ $ref: `openapi.json#${responsePointer}` });
  if (validate(body)) return [];
  return [`${where}: ${ajv.errorsText(validate.errors, { separator: "; " })}`];
}

let checked = 0;
if (samplesPath) {
  const lines = readFileSync(samplesPath, "utf8").split("\n").filter((l) => l.trim().length > 0);
  for (const line of lines) {
    const sample = JSON.parse(line);
    const problems = check(sample);
    checked += 1;
    if (sample.expect === "invalid") {
      if (problems.length === 0) failures.push(`${sample.method} ${sample.path}: a sample that breaks the contract was accepted`);
    } else {
      failures.push(...problems);
    }
  }
}

if (failures.length > 0) {
  for (const f of failures) console.error(f);
  process.exit(1);
}
console.log(`OpenAPI ${validator.version} document valid; ${checked} responses checked`);
