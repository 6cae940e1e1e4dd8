//! `stella offline-kit build`: a deterministic archive for air-gapped installs — the binaries,
//! the deployment files, the documentation and the trust material — and an Export Center
//! manifest that lists the archive and every file in it, for the signer to sign
//! (`/sign/export`). Offline, `stella verify KIT.tar --bundle export.sigstore.json --key …
//! --predicate-type stella.ops/export@v1` checks the archive before anything is installed.
//!
//! Deterministic: entries in path order, with fixed times, owners and modes (0755 for
//! executables, 0644 otherwise); the same inputs give the same bytes. The signature cannot be
//! (ECDSA is randomised), so it lives beside the archive, never in it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use stella_api::{ExportFile, ExportManifest};

pub const KIT: &str = "stella-signer-offline-kit";

/// Where the kit's parts come from.
pub struct Sources {
    /// `stella-signer` and `stella` are taken from here.
    pub bin_dir: PathBuf,
    /// `deploy/` (HAProxy, Prometheus rules, Grafana, systemd, Kubernetes, local scripts).
    pub deploy_dir: PathBuf,
    /// `docs/` (runbooks, configuration, API and the OpenAPI document).
    pub docs_dir: Option<PathBuf>,
    /// The output of `stella trust export` (keys, `trusted_root.json`, the log key).
    pub trust_dir: Option<PathBuf>,
}

/// (path in the archive, file on disk), sorted by path.
pub fn entries(sources: &Sources) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for bin in ["stella-signer", "stella"] {
        let path = sources.bin_dir.join(bin);
        anyhow::ensure!(path.is_file(), "{} is missing", path.display());
        out.push((format!("{KIT}/bin/{bin}"), path));
    }
    walk(&sources.deploy_dir, &format!("{KIT}/deploy"), &mut out)?;
    if let Some(docs) = &sources.docs_dir {
        walk(docs, &format!("{KIT}/docs"), &mut out)?;
    }
    if let Some(trust) = &sources.trust_dir {
        walk(trust, &format!("{KIT}/trust"), &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> anyhow::Result<()> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        let path = child.path();
        let kind = child.file_type()?;
        if kind.is_dir() {
            walk(&path, &format!("{prefix}/{name}"), out)?;
        } else if kind.is_file() {
            out.push((format!("{prefix}/{name}"), path));
        }
    }
    Ok(())
}

fn media_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("md") => "text/markdown",
        Some("yml" | "yaml") => "application/yaml",
        Some("toml") => "application/toml",
        Some("sh") => "text/x-shellscript",
        Some("pem") => "application/x-pem-file",
        Some("service") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// `sha256:HEX` and size of a file, read in a stream (binaries are large).
fn file_digest(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// Writes `OUT/stella-signer-offline-kit.tar` and returns the manifest that lists it and every
/// file in it.
pub fn build(sources: &Sources, out: &Path, version: &str) -> anyhow::Result<ExportManifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let entries = entries(sources)?;
    let mut files = Vec::new();
    let tar_name = format!("{KIT}.tar");
    let tar_path = out.join(&tar_name);
    let file = std::fs::File::create(&tar_path)
        .with_context(|| format!("creating {}", tar_path.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    for (name, path) in &entries {
        let (sha256, size) = file_digest(path)?;
        builder
            .append_path_with_name(path, name)
            .with_context(|| format!("archiving {}", path.display()))?;
        files.push(ExportFile {
            path: name.clone(),
            digest: sha256,
            media_type: media_type(name).to_owned(),
            size: Some(size),
        });
    }
    let mut writer = builder.into_inner()?;
    std::io::Write::flush(&mut writer)?;
    drop(writer);
    let (sha256, size) = file_digest(&tar_path)?;
    files.insert(
        0,
        ExportFile {
            path: tar_name,
            digest: sha256,
            media_type: "application/x-tar".into(),
            size: Some(size),
        },
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("kind".into(), "offline-kit".into());
    metadata.insert("version".into(), version.into());
    Ok(ExportManifest {
        export_id: format!("{KIT}-{version}"),
        created_at: None,
        files,
        metadata: Some(metadata),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(root: &Path) -> Sources {
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        for name in ["stella-signer", "stella"] {
            std::fs::write(bin.join(name), format!("#!/bin/sh\necho {name}\n")).expect("bin");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .expect("mode");
        }
        let deploy = root.join("deploy");
        std::fs::create_dir_all(deploy.join("prometheus")).expect("deploy");
        std::fs::write(deploy.join("prometheus/rules.yml"), "groups: []\n").expect("rules");
        std::fs::write(deploy.join("README"), "deploy\n").expect("readme");
        Sources {
            bin_dir: bin,
            deploy_dir: deploy,
            docs_dir: None,
            trust_dir: None,
        }
    }

    #[test]
    fn the_same_inputs_make_the_same_archive_and_manifest() {
        let root = tempfile::tempdir().expect("tmp");
        let sources = sources(root.path());
        let first = build(&sources, &root.path().join("a"), "1.0.0").expect("build");
        // Different file times and a different order of creation change nothing.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(sources.deploy_dir.join("README"), "deploy\n").expect("touch");
        let second = build(&sources, &root.path().join("b"), "1.0.0").expect("build");
        let read = |d: &str| std::fs::read(root.path().join(d).join(format!("{KIT}.tar")));
        assert_eq!(read("a").expect("a"), read("b").expect("b"));
        assert_eq!(first, second);
        let paths: Vec<&str> = first.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "stella-signer-offline-kit.tar",
                "stella-signer-offline-kit/bin/stella",
                "stella-signer-offline-kit/bin/stella-signer",
                "stella-signer-offline-kit/deploy/README",
                "stella-signer-offline-kit/deploy/prometheus/rules.yml",
            ]
        );
        // A changed input changes the archive's digest.
        std::fs::write(sources.deploy_dir.join("README"), "changed\n").expect("edit");
        let third = build(&sources, &root.path().join("c"), "1.0.0").expect("build");
        assert_ne!(third.files[0].digest, first.files[0].digest);
    }
}
