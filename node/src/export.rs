//! Export Center signing (pure): an export manifest becomes a signing request — an in-toto
//! statement `stella.ops/export@v1` whose subjects are the canonical manifest (`export.json`)
//! and every file it lists — and a signed response becomes the manifest + signature tuple with
//! its provenance (`provenance.json`). The signing itself is the ordinary pipeline: the same
//! admission, quota, audit and exactly-once rules as `/sign/dsse`.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;
use stella_api::{
    ExportManifest, ExportProvenance, SignDsseRequest, SignDsseResponse, SignExportRequest,
    SignExportResponse, SubjectWire,
};
use stella_signer::digest::sha256_hex;
use stella_signer::statement::MAX_SUBJECTS;

use crate::Error;

/// The file name the canonical manifest is a subject under (upstream's name for it).
pub const MANIFEST_NAME: &str = "export.json";
const MAX_PATH: usize = 1024;
const MAX_MEDIA_TYPE: usize = 255;

/// Checks a manifest: an id, at most `MAX_SUBJECTS - 1` files with distinct, relative paths,
/// SHA-256 digests and media types.
pub fn validate(manifest: &ExportManifest) -> Result<(), Error> {
    let bad = |why: String| Err(Error::InvalidRequest(format!("export manifest: {why}")));
    if manifest.export_id.trim().is_empty() || manifest.export_id.len() > 200 {
        return bad("exportId must be 1 to 200 characters".into());
    }
    if manifest.files.is_empty() || manifest.files.len() >= MAX_SUBJECTS {
        return bad(format!("1 to {} files", MAX_SUBJECTS - 1));
    }
    let mut seen = HashSet::new();
    for (i, file) in manifest.files.iter().enumerate() {
        if file.path.is_empty()
            || file.path.len() > MAX_PATH
            || file.path.starts_with('/')
            || file.path.split('/').any(|part| part == "..")
            || file.path == MANIFEST_NAME
            || file.path.chars().any(char::is_control)
        {
            return bad(format!(
                "files[{i}].path must be a relative path (no `..`, not `{MANIFEST_NAME}`) of at most {MAX_PATH} bytes"
            ));
        }
        if !seen.insert(file.path.as_str()) {
            return bad(format!("files[{i}].path is listed twice"));
        }
        let hex = file.digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return bad(format!(
                "files[{i}].digest must be sha256:<64 lowercase hex>"
            ));
        }
        if file.media_type.is_empty()
            || file.media_type.len() > MAX_MEDIA_TYPE
            || !file.media_type.contains('/')
        {
            return bad(format!("files[{i}].mediaType must be a media type"));
        }
    }
    if let Some(t) = &manifest.created_at
        && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_err()
    {
        return bad("createdAt must be an RFC 3339 time".into());
    }
    Ok(())
}

/// The manifest's RFC 8785 bytes: the same manifest always gives the same bytes.
pub fn canonical(manifest: &ExportManifest) -> Result<Vec<u8>, Error> {
    Ok(stella_signer::canonical::to_vec(manifest)?)
}

/// The signing request for an export: subjects `export.json` (the canonical manifest) and
/// every file; predicate `{manifestDigest, exportId, artifactCount[, createdAt]}`.
pub fn sign_request(request: &SignExportRequest, manifest_bytes: &[u8]) -> SignDsseRequest {
    let manifest = &request.manifest;
    let manifest_digest = sha256_hex(manifest_bytes);
    let subject_of = |name: &str, hex: &str| SubjectWire {
        name: name.to_owned(),
        digest: BTreeMap::from([("sha256".to_owned(), hex.to_owned())]),
    };
    let mut subject = vec![subject_of(MANIFEST_NAME, &manifest_digest)];
    subject.extend(manifest.files.iter().map(|f| {
        subject_of(
            &f.path,
            f.digest.strip_prefix("sha256:").unwrap_or(&f.digest),
        )
    }));
    let mut predicate = json!({
        "manifestDigest": format!("sha256:{manifest_digest}"),
        "exportId": manifest.export_id,
        "artifactCount": manifest.files.len(),
    });
    if let Some(created) = &manifest.created_at {
        predicate["createdAt"] = json!(created);
    }
    SignDsseRequest {
        subject,
        predicate_type: "stella.ops/export@v1".into(),
        predicate,
        scanner_image_digest: None,
        poe: request.poe.clone(),
        options: request.options.clone(),
    }
}

/// Who asked, as provenance names them.
pub struct Signed<'a> {
    pub tenant: &'a str,
    pub requested_by: &'a str,
    pub signed_at: String,
}

/// The manifest + signature tuple and its provenance.
pub fn response(
    manifest: &ExportManifest,
    manifest_bytes: Vec<u8>,
    signature: SignDsseResponse,
    who: Signed<'_>,
) -> Result<SignExportResponse, Error> {
    let manifest_sha256 = sha256_hex(&manifest_bytes);
    let identity = &signature.signer_identity;
    let provenance = ExportProvenance {
        export_id: manifest.export_id.clone(),
        manifest_sha256: manifest_sha256.clone(),
        statement_sha256: signature.statement_sha256.clone(),
        tenant: who.tenant.to_owned(),
        requested_by: who.requested_by.to_owned(),
        signing_mode: identity.mode.clone(),
        key_ids: if identity.signatures.is_empty() {
            vec![identity.key_id.clone()]
        } else {
            identity
                .signatures
                .iter()
                .map(|s| s.key_id.clone())
                .collect()
        },
        key_source: identity.key_source.clone(),
        plan: signature.quota.as_ref().map(|q| q.plan.clone()),
        bundle_sha256: signature.bundle_sha256.clone(),
        audit_id: signature.audit_id.clone(),
        log_index: signature.log_entry.as_ref().map(|e| e.log_index),
        request_id: signature.request_id.clone(),
        signed_at: who.signed_at,
    };
    let manifest = serde_json::value::RawValue::from_string(
        String::from_utf8(manifest_bytes)
            .map_err(|_| Error::Unavailable("canonical manifest is not UTF-8".into()))?,
    )
    .map_err(|e| Error::Unavailable(format!("canonical manifest: {e}")))?;
    Ok(SignExportResponse {
        manifest,
        manifest_sha256,
        signature,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stella_api::ExportFile;

    fn manifest() -> ExportManifest {
        ExportManifest {
            export_id: "run-42".into(),
            created_at: Some("2026-12-01T10:00:00Z".into()),
            files: vec![
                ExportFile {
                    path: "sboms/app.cdx.json".into(),
                    digest: format!("sha256:{}", "a".repeat(64)),
                    media_type: "application/vnd.cyclonedx+json".into(),
                    size: Some(1234),
                },
                ExportFile {
                    path: "vex/app.openvex.json".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                    media_type: "application/openvex+json".into(),
                    size: None,
                },
            ],
            metadata: Some(serde_json::Map::from_iter([(
                "profile".to_owned(),
                json!("mirror"),
            )])),
        }
    }

    #[test]
    fn the_same_manifest_gives_the_same_bytes_and_statement() {
        let m = manifest();
        let bytes = canonical(&m).expect("canonical");
        // Keys sorted (RFC 8785), no whitespace: golden.
        assert!(bytes.starts_with(br#"{"createdAt":"2026-12-01T10:00:00Z","exportId":"run-42","files":[{"digest":"sha256:"#));
        let request = SignExportRequest {
            manifest: m.clone(),
            poe: None,
            options: Default::default(),
        };
        let a = sign_request(&request, &bytes);
        let b = sign_request(&request, &canonical(&m.clone()).expect("again"));
        assert_eq!(a, b);
        assert_eq!(a.subject.len(), 3);
        assert_eq!(a.subject[0].name, MANIFEST_NAME);
        assert_eq!(a.subject[0].digest["sha256"], sha256_hex(&bytes));
        assert_eq!(a.subject[2].digest["sha256"], "b".repeat(64));
        assert_eq!(a.predicate["artifactCount"], 2);
        let plan = crate::pipeline::plan(a).expect("a valid statement");
        assert_eq!(plan.predicate_type.as_str(), "stella.ops/export@v1");
    }

    #[test]
    fn bad_manifests_are_refused_with_the_reason() {
        let mut m = manifest();
        assert!(validate(&m).is_ok());
        for (edit, why) in [
            (
                Box::new(|m: &mut ExportManifest| m.files[0].path = "../etc/passwd".into())
                    as Box<dyn Fn(&mut ExportManifest)>,
                "relative",
            ),
            (
                Box::new(|m: &mut ExportManifest| m.files[1].path = m.files[0].path.clone()),
                "twice",
            ),
            (
                Box::new(|m: &mut ExportManifest| m.files[0].digest = "sha256:XYZ".into()),
                "digest",
            ),
            (
                Box::new(|m: &mut ExportManifest| m.files[0].media_type = "json".into()),
                "mediaType",
            ),
            (Box::new(|m: &mut ExportManifest| m.files.clear()), "files"),
            (
                Box::new(|m: &mut ExportManifest| m.export_id = " ".into()),
                "exportId",
            ),
            (
                Box::new(|m: &mut ExportManifest| m.created_at = Some("yesterday".into())),
                "createdAt",
            ),
            (
                Box::new(|m: &mut ExportManifest| m.files[0].path = MANIFEST_NAME.into()),
                "relative",
            ),
        ] {
            m = manifest();
            edit(&mut m);
            let err = validate(&m).expect_err(why).to_string();
            assert!(err.contains(why), "{why}: {err}");
        }
    }
}
