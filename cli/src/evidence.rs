//! Turning evidence files into predicates: SBOM format detection and component counting, scan
//! report policy metadata. Pure functions over bytes.

use serde_json::{Value, json};
use stella_signer::digest::sha256_ref;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{0}")]
    Invalid(String),
}

/// Builds the `stella.ops/sbom@v1` predicate for an SBOM file's bytes, in upstream's shape:
/// `format` is one of upstream's (`cyclonedx-1.6`, `spdx-3.0.1`, `spdx-2.3`), read from the
/// document itself; `format` overrides detection.
pub fn sbom_predicate(bytes: &[u8], format: Option<&str>) -> Result<Value, EvidenceError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| {
        EvidenceError::Invalid(format!(
            "the SBOM is not JSON ({e}); CycloneDX 1.6 JSON and SPDX 2.3 / 3.0.1 JSON are supported"
        ))
    })?;
    let format = match format {
        Some(f) => f.to_owned(),
        None => detect_format(&doc)?,
    };
    let component_count = match format.as_str() {
        "cyclonedx-1.6" => count_cyclonedx(doc.get("components")),
        "spdx-2.3" => doc
            .get("packages")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as u64,
        "spdx-3.0.1" => doc
            .get("@graph")
            .and_then(Value::as_array)
            .map_or(0, |graph| {
                graph
                    .iter()
                    .filter(|e| e.get("type").and_then(Value::as_str) == Some("software_Package"))
                    .count()
            }) as u64,
        other => {
            return Err(EvidenceError::Invalid(format!(
                "unsupported SBOM format `{other}` (sbom@v1 takes cyclonedx-1.6, spdx-3.0.1, spdx-2.3)"
            )));
        }
    };
    Ok(json!({"format": format, "digest": sha256_ref(bytes), "componentCount": component_count}))
}

/// The document's format in upstream's names, or why it is not one sbom@v1 accepts.
fn detect_format(doc: &Value) -> Result<String, EvidenceError> {
    if doc.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        let version = doc
            .get("specVersion")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return match version {
            "1.6" => Ok("cyclonedx-1.6".into()),
            other => Err(EvidenceError::Invalid(format!(
                "CycloneDX {other}: stella.ops/sbom@v1 takes CycloneDX 1.6 (upstream's schema); convert the SBOM or pass --format"
            ))),
        };
    }
    if let Some(version) = doc.get("spdxVersion").and_then(Value::as_str) {
        return match version {
            "SPDX-2.3" => Ok("spdx-2.3".into()),
            other => Err(EvidenceError::Invalid(format!(
                "{other}: stella.ops/sbom@v1 takes SPDX 2.3 or 3.0.1"
            ))),
        };
    }
    let context = doc.get("@context").and_then(Value::as_str).unwrap_or("");
    if context.contains("spdx.org/rdf/3.0.1") {
        return Ok("spdx-3.0.1".into());
    }
    Err(EvidenceError::Invalid(
        "cannot tell the SBOM format (no `bomFormat: CycloneDX`, `spdxVersion` or SPDX 3.0.1 `@context`); pass --format".into(),
    ))
}

/// CycloneDX components nest (`components[].components[]`); every level counts.
fn count_cyclonedx(components: Option<&Value>) -> u64 {
    components.and_then(Value::as_array).map_or(0, |list| {
        list.iter()
            .map(|c| 1 + count_cyclonedx(c.get("components")))
            .sum()
    })
}

/// Builds the `stella.ops/report@v1` predicate. Policy digest and view set come from the flags,
/// else from the report's own `policy.digest` / `policy.viewSet`.
pub fn report_predicate(
    bytes: &[u8],
    policy_digest: Option<&str>,
    view_set: &[String],
) -> Result<Value, EvidenceError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| EvidenceError::Invalid(format!("the report is not JSON: {e}")))?;
    let policy = doc.get("policy");
    let digest = policy_digest
        .map(str::to_owned)
        .or_else(|| policy.and_then(|p| p.get("digest")).and_then(Value::as_str).map(str::to_owned))
        .ok_or_else(|| EvidenceError::Invalid("no policy digest: pass --policy-digest sha256:<hex> or set policy.digest in the report".into()))?;
    let views: Vec<String> = if view_set.is_empty() {
        policy
            .and_then(|p| p.get("viewSet"))
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_else(|| vec!["default".to_owned()])
    } else {
        view_set.to_vec()
    };
    Ok(json!({"reportDigest": sha256_ref(bytes), "policy": {"digest": digest, "viewSet": views}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclonedx_components_are_counted_at_every_level() {
        let sbom = br#"{"bomFormat":"CycloneDX","specVersion":"1.6","components":[{"name":"a"},{"name":"b","components":[{"name":"c"}]}]}"#;
        let p = sbom_predicate(sbom, None).expect("predicate");
        assert_eq!(p["format"], "cyclonedx-1.6");
        let older = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#;
        let err = sbom_predicate(older, None)
            .expect_err("1.5 is not upstream's")
            .to_string();
        assert!(err.contains("CycloneDX 1.5"), "{err}");
        assert_eq!(p["componentCount"], 3);
        assert_eq!(p["digest"], sha256_ref(sbom));
    }

    #[test]
    fn spdx_packages_are_counted_and_unknown_formats_refused() {
        let spdx = br#"{"spdxVersion":"SPDX-2.3","packages":[{"name":"x"},{"name":"y"}]}"#;
        let p = sbom_predicate(spdx, None).expect("spdx");
        assert_eq!(
            (p["format"].as_str(), p["componentCount"].as_u64()),
            (Some("spdx-2.3"), Some(2))
        );
        let spdx3 = br#"{"@context":"https://spdx.org/rdf/3.0.1/spdx-context.jsonld","@graph":[{"type":"software_Package"},{"type":"Person"},{"type":"software_Package"}]}"#;
        let p = sbom_predicate(spdx3, None).expect("spdx 3");
        assert_eq!(
            (p["format"].as_str(), p["componentCount"].as_u64()),
            (Some("spdx-3.0.1"), Some(2))
        );
        assert!(sbom_predicate(br#"{"hello":1}"#, None).is_err());
        assert!(sbom_predicate(b"not json", None).is_err());
        assert!(sbom_predicate(spdx, Some("xml")).is_err());
        for sbom in [&spdx[..], &spdx3[..]] {
            let p = sbom_predicate(sbom, None).expect("predicate");
            stella_signer::PredicateType::Sbom
                .validate(&p)
                .expect("what the CLI builds passes upstream's schema");
        }
    }

    #[test]
    fn report_policy_comes_from_flags_or_the_report() {
        let d = format!("sha256:{}", "1".repeat(64));
        let report = format!(r#"{{"policy":{{"digest":"{d}","viewSet":["ops","sec"]}}}}"#);
        let p = report_predicate(report.as_bytes(), None, &[]).expect("from report");
        assert_eq!(p["policy"]["viewSet"], json!(["ops", "sec"]));
        let p = report_predicate(b"{}", Some(&d), &["x".into()]).expect("from flags");
        assert_eq!(p["policy"]["digest"], d);
        assert!(report_predicate(b"{}", None, &[]).is_err());
    }
}
