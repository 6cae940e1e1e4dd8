//! in-toto Statement v1 and the predicate allow-list.
//!
//! A statement has exactly `_type`, `subject`, `predicateType`, `predicate` (verifiers reject
//! anything else), and is serialized canonically (RFC 8785) to become the DSSE payload.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

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

/// The predicate types this signer will put its name under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PredicateType {
    Sbom,
    Report,
    Export,
}

impl PredicateType {
    pub const ALL: [PredicateType; 3] = [
        PredicateType::Sbom,
        PredicateType::Report,
        PredicateType::Export,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PredicateType::Sbom => "stella.ops/sbom@v1",
            PredicateType::Report => "stella.ops/report@v1",
            PredicateType::Export => "stella.ops/export@v1",
        }
    }

    /// Checks a predicate against this type's schema and returns it unchanged on success.
    pub fn validate(&self, predicate: &Value) -> Result<(), Error> {
        let fail = |reason: String| Error::InvalidPredicate {
            predicate_type: self.as_str().to_owned(),
            reason,
        };
        let Some(object) = predicate.as_object() else {
            return Err(fail("the predicate must be a JSON object".into()));
        };
        let digest_field = |field: &str| -> Result<(), Error> {
            match object.get(field).and_then(Value::as_str) {
                Some(d) => parse_sha256_ref(d)
                    .map(|_| ())
                    .map_err(|e| fail(format!("`{field}`: {e}"))),
                None => Err(fail(format!("`{field}` (sha256:<hex>) is required"))),
            }
        };
        match self {
            PredicateType::Sbom => {
                match object.get("format").and_then(Value::as_str) {
                    Some(f) if SBOM_FORMATS.contains(&f) => {}
                    _ => return Err(fail(format!("`format` must be one of {SBOM_FORMATS:?}"))),
                }
                digest_field("digest")?;
                if object
                    .get("componentCount")
                    .and_then(Value::as_u64)
                    .is_none()
                {
                    return Err(fail(
                        "`componentCount` must be a non-negative integer".into(),
                    ));
                }
            }
            PredicateType::Report => {
                digest_field("reportDigest")?;
                let Some(policy) = object.get("policy").and_then(Value::as_object) else {
                    return Err(fail("`policy` {digest, viewSet} is required".into()));
                };
                match policy.get("digest").and_then(Value::as_str) {
                    Some(d) => {
                        parse_sha256_ref(d).map_err(|e| fail(format!("`policy.digest`: {e}")))?
                    }
                    None => return Err(fail("`policy.digest` (sha256:<hex>) is required".into())),
                };
                let view_set_ok =
                    policy
                        .get("viewSet")
                        .and_then(Value::as_array)
                        .is_some_and(|views| {
                            views
                                .iter()
                                .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                        });
                if !view_set_ok {
                    return Err(fail(
                        "`policy.viewSet` must be an array of non-empty strings".into(),
                    ));
                }
            }
            PredicateType::Export => {
                digest_field("manifestDigest")?;
            }
        }
        Ok(())
    }
}

/// SBOM formats the `sbom@v1` predicate may name.
pub const SBOM_FORMATS: [&str; 2] = ["cyclonedx-json", "spdx-json"];

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
        json!({"format": "cyclonedx-json", "digest": format!("sha256:{}", "a".repeat(64)), "componentCount": 3})
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
                json!({"format": "cyclonedx-json", "digest": d, "componentCount": -1}),
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
        ];
        for (ty, predicate, ok) in cases {
            assert_eq!(ty.validate(&predicate).is_ok(), ok, "{ty} {predicate}");
        }
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
