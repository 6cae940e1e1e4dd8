//! Discovery of a digest's release signatures: referrers API, referrers tag schema, classic
//! cosign tag (in that order).

use oci_client::RegistryOperation;
use oci_client::secrets::RegistryAuth;
use stella_signer::Bundle;

use super::{Fetch, Fetched};
use crate::*;

impl Registry {
    /// Finds every release signature stored for `digest`.
    pub async fn discover(&self, digest: &str) -> Result<Discovery, ReleaseError> {
        let hex = parse_digest(digest)?;
        let mut discovery = Discovery::default();
        // 1. The OCI 1.1 referrers API (a 404 means the registry has none: then the tag schema).
        let mut referrers: Vec<DescriptorDoc> = Vec::new();
        let subject = self.reference(&format!("@{digest}"))?;
        // The OCI client answers a registry's token challenge only when asked to: get an
        // anonymous pull token first (a registry without auth needs none) for the blobs below.
        if let Err(e) = self
            .client
            .auth(&subject, &RegistryAuth::Anonymous, RegistryOperation::Pull)
            .await
        {
            discovery
                .problems
                .push(format!("registry authentication for {digest}: {e}"));
        }
        // Read here, bounded like every manifest (the OCI client reads the answer whole, and
        // on a 404 fetches the tag-schema index whole too).
        let (base, name) = self.endpoint();
        let url = format!("{base}/v2/{name}/referrers/{digest}");
        match self
            .get_bounded(&url, OCI_INDEX, self.config.max_manifest_bytes)
            .await
        {
            Ok(Some(bytes)) => match serde_json::from_slice::<IndexDoc>(&bytes) {
                Ok(index) => referrers = index.manifests,
                Err(e) => discovery
                    .problems
                    .push(format!("malformed referrers API answer for {digest}: {e}")),
            },
            // A registry without the referrers API: the tag schema below is the answer.
            Ok(None) => {}
            Err(Fetched::Oversized) => discovery.problems.push(format!(
                "the referrers API answer for {digest} is over the {}-byte limit",
                self.config.max_manifest_bytes
            )),
            // Anything else is a problem to report (the tag schema may still find signatures).
            Err(Fetched::Unavailable(e)) => discovery
                .problems
                .push(format!("referrers API for {digest}: {e}")),
        }
        // 2. The referrers tag schema, read here directly so that errors are errors.
        if referrers.is_empty() {
            match self.manifest(&format!(":sha256-{hex}")).await? {
                Fetch::Found(bytes) => match serde_json::from_slice::<IndexDoc>(&bytes) {
                    Ok(index) => {
                        referrers = index.manifests;
                    }
                    Err(e) => discovery.problems.push(format!(
                        "malformed referrers index at tag sha256-{hex}: {e}"
                    )),
                },
                Fetch::Oversized => discovery.problems.push(format!(
                    "the referrers index at tag sha256-{hex} is over the {}-byte limit",
                    self.config.max_manifest_bytes
                )),
                Fetch::Missing => {}
            }
        }
        for descriptor in referrers {
            match self.bundle_candidate(&descriptor).await {
                Ok(Some(candidate)) => discovery.candidates.push(candidate),
                Ok(None) => {}
                Err(problem) => discovery.problems.push(problem),
            }
        }
        // 3. The classic cosign signature tag.
        let cosign = self.manifest(&format!(":sha256-{hex}.sig")).await?;
        if let Fetch::Oversized = cosign {
            discovery.problems.push(format!(
                "the cosign signature manifest of {digest} is over the {}-byte limit",
                self.config.max_manifest_bytes
            ));
        }
        if let Fetch::Found(bytes) = cosign {
            let manifest_digest = sha256_digest(&bytes);
            match serde_json::from_slice::<ManifestDoc>(&bytes) {
                Ok(manifest) => {
                    for layer in manifest.layers {
                        let Some(signature) = layer.cosign_signature() else {
                            discovery.problems.push(format!(
                                "cosign layer {} has no signature annotation",
                                layer.digest
                            ));
                            continue;
                        };
                        match self.blob(&layer).await {
                            Ok(payload) => discovery.candidates.push(Candidate::CosignClassic {
                                manifest_digest: manifest_digest.clone(),
                                payload,
                                signature,
                            }),
                            Err(problem) => discovery.problems.push(problem),
                        }
                    }
                }
                Err(e) => discovery
                    .problems
                    .push(format!("malformed cosign signature manifest: {e}")),
            }
        }
        Ok(discovery)
    }

    /// The bundle a referrer manifest carries, if it is a release-signature referrer.
    async fn bundle_candidate(
        &self,
        descriptor: &DescriptorDoc,
    ) -> Result<Option<Candidate>, String> {
        if descriptor
            .artifact_type
            .as_deref()
            .is_some_and(|t| t != BUNDLE_MEDIA_TYPE)
        {
            return Ok(None);
        }
        if descriptor.size as usize > self.config.max_manifest_bytes {
            return Err(format!(
                "referrer manifest {} is {} bytes, over the {}-byte limit",
                descriptor.digest, descriptor.size, self.config.max_manifest_bytes
            ));
        }
        let bytes = match self
            .manifest(&format!("@{}", descriptor.digest))
            .await
            .map_err(|e| e.to_string())?
        {
            Fetch::Found(bytes) => bytes,
            Fetch::Missing => return Err(format!("referrer {} is missing", descriptor.digest)),
            Fetch::Oversized => {
                return Err(format!(
                    "referrer manifest {} is over the {}-byte limit",
                    descriptor.digest, self.config.max_manifest_bytes
                ));
            }
        };
        if bytes.len() > self.config.max_manifest_bytes {
            return Err(format!(
                "referrer manifest {} is over the {}-byte limit",
                descriptor.digest, self.config.max_manifest_bytes
            ));
        }
        let manifest: ManifestDoc = serde_json::from_slice(&bytes)
            .map_err(|e| format!("malformed referrer manifest {}: {e}", descriptor.digest))?;
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type == BUNDLE_MEDIA_TYPE)
        else {
            return Ok(None);
        };
        let blob = self.blob(layer).await?;
        let bundle = Bundle::from_json(&blob)
            .map_err(|e| format!("referrer {}: not a Sigstore bundle: {e}", descriptor.digest))?;
        Ok(Some(Candidate::Bundle {
            manifest_digest: descriptor.digest.clone(),
            bundle: Box::new(bundle),
        }))
    }
}
