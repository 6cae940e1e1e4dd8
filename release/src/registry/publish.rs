//! Publishing release signatures as OCI 1.1 referrers (and the tag-schema index), classic
//! cosign signatures, and plain images for tests.

use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use stella_signer::{FileKeySigner, KeySigner};

use super::Fetch;
use crate::*;

impl Registry {
    /// Signs `digest` (an image in this repository) with `key` and publishes the bundle as a
    /// referrer, updating the tag-schema index. Returns the referrer manifest's digest.
    pub async fn publish(&self, digest: &str, key: &FileKeySigner) -> Result<String, ReleaseError> {
        let bundle = release_bundle(&self.config.repository, digest, key)?;
        let bytes = bundle
            .to_json_pretty()
            .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.publish_bundle_bytes(digest, &bytes).await
    }

    /// Publishes `bundle_bytes` as a release-signature referrer of `digest` (tests use this to
    /// publish bundles that should not verify).
    pub async fn publish_bundle_bytes(
        &self,
        digest: &str,
        bundle_bytes: &[u8],
    ) -> Result<String, ReleaseError> {
        let hex = parse_digest(digest)?.to_owned();
        let subject = match self.manifest(&format!("@{digest}")).await? {
            Fetch::Found(bytes) => json!({
                "mediaType": media_type_of(&bytes),
                "digest": digest,
                "size": bytes.len(),
            }),
            Fetch::Missing => {
                return Err(ReleaseError::Reference(format!(
                    "{}@{digest} is not in the registry",
                    self.config.repository
                )));
            }
            Fetch::Oversized => {
                return Err(ReleaseError::Reference(format!(
                    "the manifest of {digest} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )));
            }
        };
        let layer = self.push_blob(bundle_bytes).await?;
        let config = self.push_blob(b"{}").await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config, "size": 2},
            "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": layer, "size": bundle_bytes.len()}],
            "subject": subject,
            "annotations": {"org.opencontainers.image.created": now_rfc3339()},
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        self.push_manifest(
            &format!("@{manifest_digest}"),
            &manifest_bytes,
            OCI_MANIFEST,
        )
        .await?;
        // Registries without the referrers API: keep the tag-schema index current.
        let mut entries: Vec<DescriptorDoc> = match self.manifest(&format!(":sha256-{hex}")).await?
        {
            Fetch::Found(bytes) => serde_json::from_slice::<IndexDoc>(&bytes)
                .map(|i| i.manifests)
                .unwrap_or_default(),
            Fetch::Missing => Vec::new(),
            Fetch::Oversized => {
                return Err(ReleaseError::Unavailable(format!(
                    "the tag-schema index of {digest} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )));
            }
        };
        entries.retain(|d| d.digest != manifest_digest);
        entries.push(DescriptorDoc {
            media_type: OCI_MANIFEST.into(),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            artifact_type: Some(BUNDLE_MEDIA_TYPE.into()),
            annotations: None,
        });
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let index_bytes =
            serde_json::to_vec(&index).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":sha256-{hex}"), &index_bytes, OCI_INDEX)
            .await?;
        Ok(manifest_digest)
    }

    /// Publishes a classic cosign signature (`sha256-<hex>.sig`) of `digest` by `key`.
    pub async fn publish_cosign_classic(
        &self,
        digest: &str,
        signed_digest: &str,
        key: &FileKeySigner,
    ) -> Result<String, ReleaseError> {
        let hex = parse_digest(digest)?.to_owned();
        let payload = serde_json::to_vec(&json!({
            "critical": {
                "identity": {"docker-reference": self.config.repository},
                "image": {"docker-manifest-digest": signed_digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))
        .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let signature = key
            .sign(&payload)
            .map_err(|e| ReleaseError::Signing(e.to_string()))?;
        let layer = self.push_blob(&payload).await?;
        let config = self.push_blob(b"{}").await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config, "size": 2},
            "layers": [{
                "mediaType": COSIGN_SIMPLE_SIGNING,
                "digest": layer,
                "size": payload.len(),
                "annotations": {COSIGN_SIGNATURE_ANNOTATION: STANDARD.encode(&signature.signature)},
            }],
        });
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":sha256-{hex}.sig"), &bytes, OCI_MANIFEST)
            .await?;
        Ok(sha256_digest(&bytes))
    }

    /// Pushes a minimal image (config + one layer of `content`) and returns its digest (tests
    /// and demos need a scanner image to sign).
    pub async fn push_image(&self, tag: &str, content: &[u8]) -> Result<String, ReleaseError> {
        let layer = self.push_blob(content).await?;
        let config_bytes =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = self.push_blob(config_bytes).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": content.len()}],
        });
        let bytes =
            serde_json::to_vec(&manifest).map_err(|e| ReleaseError::Signing(e.to_string()))?;
        self.push_manifest(&format!(":{tag}"), &bytes, OCI_MANIFEST)
            .await?;
        Ok(sha256_digest(&bytes))
    }

    /// Stores `bytes` as a manifest under `suffix` (`:tag` or `@digest`).
    pub async fn push_manifest(
        &self,
        suffix: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), ReleaseError> {
        let reference = self.reference(suffix)?;
        let content_type = media_type
            .parse()
            .map_err(|_| ReleaseError::Reference(format!("media type {media_type}")))?;
        self.client
            .push_manifest_raw(&reference, bytes.to_vec(), content_type)
            .await
            .map(|_| ())
            .map_err(|e| ReleaseError::Unavailable(e.to_string()))
    }

    async fn push_blob(&self, bytes: &[u8]) -> Result<String, ReleaseError> {
        let digest = sha256_digest(bytes);
        let reference = self.reference("")?;
        self.client
            .push_blob(&reference, bytes.to_vec(), &digest)
            .await
            .map_err(|e| ReleaseError::Unavailable(e.to_string()))?;
        Ok(digest)
    }
}
