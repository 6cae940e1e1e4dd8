//! in-toto Statement v1 and the predicate allow-list.
//!
//! A statement has exactly `_type`, `subject`, `predicateType`, `predicate` (verifiers reject
//! anything else), and is serialized canonically (RFC 8785) to become the DSSE payload.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{is_sha256_hex, parse_sha256_ref};
use crate::{Error, canonical};

pub const STATEMENT_TYPE_V1: &str = "https://in-toto.io/Statement/v1";

/// Upper bound on subjects per statement; a statement is evidence, not an inventory.
pub const MAX_SUBJECTS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    pub fn sha256(name: impl Into<String>, hex: impl Into<String>) -> Subject {
        Subject {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_owned(), hex.into())]),
        }
    }

    /// Parses `NAME@sha256:HEX`. The name may itself contain `@` (OCI references do).
    pub fn parse_reference(text: &str) -> Result<Subject, Error> {
        let Some((name, digest)) = text.rsplit_once('@') else {
            return Err(Error::InvalidInput(format!(
                "subject `{text}` must look like NAME@sha256:HEX"
            )));
        };
        if name.is_empty() {
            return Err(Error::InvalidInput(format!(
                "subject `{text}` has an empty name"
            )));
        }
        let hex = parse_sha256_ref(digest)?;
        Ok(Subject::sha256(name, hex))
    }

    pub fn sha256_hex(&self) -> Option<&str> {
        self.digest.get("sha256").map(String::as_str)
    }
}

/// The predicate types this signer will put its name under: upstream StellaOps' list. Each has a
/// JSON Schema in `signer/schemas/predicates/` (`sbom` is upstream's own; the others are
/// documented in `docs/predicates.md`), checked with the `jsonschema` crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredicateType {
    Sbom,
    Report,
    Export,
    Promotion,
    Vex,
    VexDecision,
    Graph,
}

impl PredicateType {
    pub const ALL: [PredicateType; 7] = [
        PredicateType::Sbom,
        PredicateType::Report,
        PredicateType::Export,
        PredicateType::Promotion,
        PredicateType::Vex,
        PredicateType::VexDecision,
        PredicateType::Graph,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PredicateType::Sbom => "stella.ops/sbom@v1",
            PredicateType::Report => "stella.ops/report@v1",
            PredicateType::Export => "stella.ops/export@v1",
            PredicateType::Promotion => "stella.ops/promotion@v1",
            PredicateType::Vex => "stella.ops/vex@v1",
            PredicateType::VexDecision => "stella.ops/vexDecision@v1",
            PredicateType::Graph => "stella.ops/graph@v1",
        }
    }

    /// The JSON Schema this type's predicates must satisfy (the file in the repository).
    pub fn schema(&self) -> &'static str {
        match self {
            PredicateType::Sbom => include_str!("../schemas/predicates/sbom.v1.schema.json"),
            PredicateType::Report => include_str!("../schemas/predicates/report.v1.schema.json"),
            PredicateType::Export => include_str!("../schemas/predicates/export.v1.schema.json"),
            PredicateType::Promotion => {
                include_str!("../schemas/predicates/promotion.v1.schema.json")
            }
            PredicateType::Vex => include_str!("../schemas/predicates/vex.v1.schema.json"),
            PredicateType::VexDecision => {
                include_str!("../schemas/predicates/vexDecision.v1.schema.json")
            }
            PredicateType::Graph => include_str!("../schemas/predicates/graph.v1.schema.json"),
        }
    }

    fn validator(&self) -> Result<&'static jsonschema::Validator, Error> {
        type Compiled = Result<jsonschema::Validator, String>;
        static VALIDATORS: OnceLock<Vec<(PredicateType, Compiled)>> = OnceLock::new();
        let all = VALIDATORS.get_or_init(|| {
            PredicateType::ALL
                .into_iter()
                .map(|t| {
                    let compiled = serde_json::from_str::<Value>(t.schema())
                        .map_err(|e| e.to_string())
                        .and_then(|schema| {
                            jsonschema::options()
                                .should_validate_formats(true)
                                .build(&schema)
                                .map_err(|e| e.to_string())
                        });
                    (t, compiled)
                })
                .collect()
        });
        match all.iter().find(|(t, _)| t == self) {
            Some((_, Ok(v))) => Ok(v),
            Some((_, Err(e))) => Err(Error::InvalidInput(format!(
                "the schema of {} does not compile: {e}",
                self.as_str()
            ))),
            None => Err(Error::UnsupportedPredicateType(self.as_str().to_owned())),
        }
    }

    /// Checks a predicate against this type's schema.
    pub fn validate(&self, predicate: &Value) -> Result<(), Error> {
        let validator = self.validator()?;
        let reasons: Vec<String> = validator
            .iter_errors(predicate)
            .take(3)
            .map(|e| {
                let at = e.instance_path().to_string();
                let text = e.to_string();
                let text: String = text.chars().take(200).collect();
                if at.is_empty() {
                    text
                } else {
                    format!("{at}: {text}")
                }
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidPredicate {
                predicate_type: self.as_str().to_owned(),
                reason: reasons.join("; "),
            })
        }
    }
}

/// SBOM formats the `sbom@v1` predicate may name (upstream's enum).
pub const SBOM_FORMATS: [&str; 3] = ["cyclonedx-1.6", "spdx-3.0.1", "spdx-2.3"];

impl fmt::Display for PredicateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PredicateType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        PredicateType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::UnsupportedPredicateType(s.to_owned()))
    }
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

impl Statement {
    /// Builds a statement after checking subjects and the predicate against its type's schema.
    pub fn build(
        subjects: Vec<Subject>,
        predicate_type: PredicateType,
        predicate: Value,
    ) -> Result<Statement, Error> {
        if subjects.is_empty() {
            return Err(Error::InvalidInput(
                "at least one subject is required".into(),
            ));
        }
        if subjects.len() > MAX_SUBJECTS {
            return Err(Error::InvalidInput(format!(
                "at most {MAX_SUBJECTS} subjects are allowed"
            )));
        }
        for subject in &subjects {
            if subject.name.is_empty() {
                return Err(Error::InvalidInput(
                    "subject names must not be empty".into(),
                ));
            }
            match subject.sha256_hex() {
                Some(hex) if is_sha256_hex(hex) => {}
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "subject `{}` needs a sha256 digest of 64 lowercase hex characters",
                        subject.name
                    )));
                }
            }
            if let Some((alg, _)) = subject
                .digest
                .iter()
                .find(|(alg, _)| alg.as_str() != "sha256")
            {
                return Err(Error::InvalidInput(format!(
                    "digest algorithm `{alg}` is not supported"
                )));
            }
        }
        predicate_type.validate(&predicate)?;
        Ok(Statement {
            statement_type: STATEMENT_TYPE_V1.to_owned(),
            subject: subjects,
            predicate_type: predicate_type.as_str().to_owned(),
            predicate,
        })
    }

    /// Canonical (RFC 8785) bytes: the DSSE payload.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, Error> {
        canonical::to_vec(self)
    }

    pub fn from_payload(payload: &[u8]) -> Result<Statement, Error> {
        let statement: Statement = serde_json::from_slice(payload).map_err(|e| {
            Error::InvalidInput(format!("payload is not an in-toto Statement v1: {e}"))
        })?;
        if statement.statement_type != STATEMENT_TYPE_V1 {
            return Err(Error::InvalidInput(format!(
                "unexpected statement _type `{}`",
                statement.statement_type
            )));
        }
        Ok(statement)
    }

    pub fn has_subject_digest(&self, sha256_hex: &str) -> bool {
        self.subject
            .iter()
            .any(|s| s.sha256_hex() == Some(sha256_hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sbom_predicate() -> Value {
        json!({"format": "cyclonedx-1.6", "digest": format!("sha256:{}", "a".repeat(64)), "componentCount": 3})
    }

    #[test]
    fn subject_references_parse() {
        let s = Subject::parse_reference(&format!(
            "registry.example/app@v1@sha256:{}",
            "b".repeat(64)
        ))
        .expect("ok");
        assert_eq!(s.name, "registry.example/app@v1");
        for bad in ["app", "@sha256:00", "app@sha256:XYZ", "app@md5:00"] {
            assert!(Subject::parse_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn predicate_type_allow_list() {
        assert_eq!(
            "stella.ops/sbom@v1".parse::<PredicateType>().ok(),
            Some(PredicateType::Sbom)
        );
        assert!(matches!(
            "https://slsa.dev/provenance/v1".parse::<PredicateType>(),
            Err(Error::UnsupportedPredicateType(_))
        ));
    }

    #[test]
    fn predicate_schemas_table() {
        let d = format!("sha256:{}", "c".repeat(64));
        let cases: Vec<(PredicateType, Value, bool)> = vec![
            (PredicateType::Sbom, sbom_predicate(), true),
            (
                PredicateType::Sbom,
                json!({"format": "cyclonedx-1.6", "digest": d, "componentCount": -1}),
                false,
            ),
            // Upstream's schema: only its formats, no extra fields, typed optional fields.
            (
                PredicateType::Sbom,
                json!({"format": "cyclonedx-json", "digest": d, "componentCount": 1}),
                false,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-2.3", "digest": d, "componentCount": 1, "extra": true}),
                false,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-3.0.1", "digest": d, "componentCount": 0,
                       "uri": "https://sbom.example/a.json", "tooling": "syft 1.0",
                       "createdAt": "2026-12-01T10:00:00Z"}),
                true,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-2.3", "digest": d, "componentCount": 1, "createdAt": "yesterday"}),
                false,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-2.3", "digest": d, "componentCount": i64::MAX}),
                true,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-2.3", "digest": d, "componentCount": 1.5}),
                false,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "word", "digest": d, "componentCount": 1}),
                false,
            ),
            (
                PredicateType::Sbom,
                json!({"format": "spdx-json", "digest": "sha256:AB", "componentCount": 1}),
                false,
            ),
            (PredicateType::Sbom, json!([1, 2]), false),
            (
                PredicateType::Report,
                json!({"reportDigest": d, "policy": {"digest": d, "viewSet": ["default"]}}),
                true,
            ),
            (
                PredicateType::Report,
                json!({"reportDigest": d, "policy": {"viewSet": []}}),
                false,
            ),
            (PredicateType::Report, json!({"reportDigest": d}), false),
            (
                PredicateType::Report,
                json!({"reportDigest": d, "policy": {"digest": d, "viewSet": [""]}}),
                false,
            ),
            (PredicateType::Export, json!({"manifestDigest": d}), true),
            (PredicateType::Export, json!({}), false),
            (
                PredicateType::Promotion,
                json!({"artifactDigest": d, "fromEnvironment": "staging", "toEnvironment": "prod"}),
                true,
            ),
            (
                PredicateType::Promotion,
                json!({"artifactDigest": d}),
                false,
            ),
            (
                PredicateType::Vex,
                json!({"format": "openvex-0.2.0", "digest": d, "statementCount": 4}),
                true,
            ),
            (
                PredicateType::Vex,
                json!({"format": "word", "digest": d, "statementCount": 4}),
                false,
            ),
            (
                PredicateType::VexDecision,
                json!({"vulnerabilityId": "CVE-2026-0001", "productDigest": d, "status": "not_affected"}),
                true,
            ),
            (
                PredicateType::VexDecision,
                json!({"vulnerabilityId": "CVE-2026-0001", "productDigest": d, "status": "maybe"}),
                false,
            ),
            (
                PredicateType::Graph,
                json!({"format": "stella-graph", "digest": d, "nodeCount": 3, "edgeCount": 2}),
                true,
            ),
            (
                PredicateType::Graph,
                json!({"format": "g", "digest": d}),
                false,
            ),
        ];
        for (ty, predicate, ok) in cases {
            assert_eq!(ty.validate(&predicate).is_ok(), ok, "{ty} {predicate}");
        }
    }

    #[test]
    fn every_schema_file_compiles_and_names_its_type() {
        for ty in PredicateType::ALL {
            let schema: Value = serde_json::from_str(ty.schema()).expect("schema JSON");
            let id = schema["$id"].as_str().expect("$id");
            assert_eq!(
                id.trim_start_matches("https://stella.ops/predicates/"),
                ty.as_str().trim_start_matches("stella.ops/"),
                "{ty}"
            );
            assert!(ty.validator().is_ok(), "{ty}");
        }
        let err = PredicateType::Sbom
            .validate(
                &json!({"format": "cyclonedx-1.5", "digest": "sha256:00", "componentCount": 1}),
            )
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("/format") && err.contains("/digest"),
            "names the fields: {err}"
        );
    }

    #[test]
    fn statement_payload_is_canonical_and_round_trips() {
        let st = Statement::build(
            vec![Subject::sha256("sbom.json", "d".repeat(64))],
            PredicateType::Sbom,
            sbom_predicate(),
        )
        .expect("build");
        let bytes = st.to_canonical_bytes().expect("bytes");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert!(text.starts_with(
            r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"componentCount":3,"#
        ));
        assert_eq!(Statement::from_payload(&bytes).expect("parse"), st);
        assert!(st.has_subject_digest(&"d".repeat(64)));
    }

    #[test]
    fn statements_reject_bad_subjects() {
        let p = sbom_predicate();
        assert!(Statement::build(vec![], PredicateType::Sbom, p.clone()).is_err());
        assert!(
            Statement::build(
                vec![Subject::sha256("x", "D".repeat(64))],
                PredicateType::Sbom,
                p.clone()
            )
            .is_err()
        );
        let mut two = Subject::sha256("x", "d".repeat(64));
        two.digest.insert("md5".into(), "00".into());
        assert!(Statement::build(vec![two], PredicateType::Sbom, p).is_err());
    }
}
