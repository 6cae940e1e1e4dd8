//! Dev cluster PKI: a cluster CA and one certificate per node (plus an operator certificate),
//! ECDSA P-256, valid for loopback names. For production, issue node certificates from your own
//! CA with the same shape: serverAuth + clientAuth, SAN covering the peer URL's host, and one
//! identity URI SAN — `stella://<cluster-id>/node/<id>` for node `id`,
//! `stella://<cluster-id>/operator/<name>` for an operator (see [`crate::identity`]).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{ClusterError, identity};

fn err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(e.to_string())
}

/// Writes `ca.pem`, `ca.key`, `node-<i>.pem`/`node-<i>.key` for `1..=nodes` (identity: node `i`
/// of `cluster_id`) and `admin.pem`/`admin.key` (operator `admin`) into `dir`.
pub fn generate_dev_pki(
    dir: &Path,
    cluster_id: &str,
    nodes: u64,
    extra_sans: &[String],
) -> Result<(), ClusterError> {
    if !identity::valid_name(cluster_id) {
        return Err(ClusterError::Config(format!(
            "cluster id `{cluster_id}`: 1-63 letters, digits, `-`, `_` or `.`"
        )));
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let ca_key = KeyPair::generate().map_err(err)?;
    write(dir, "ca.key", &ca_key.serialize_pem(), 0o600)?;
    let ca = CertifiedIssuer::self_signed(ca_params()?, ca_key).map_err(err)?;
    write(dir, "ca.pem", &ca.pem(), 0o644)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(extra_sans.iter().cloned());
    for i in 1..=nodes {
        let uri = identity::node_uri(cluster_id, i);
        leaf(dir, &format!("node-{i}"), &names, &uri, &ca)?;
    }
    let uri = identity::operator_uri(cluster_id, "admin");
    leaf(dir, "admin", &names, &uri, &ca)
}

fn ca_params() -> Result<CertificateParams, ClusterError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = name("stella-signer cluster CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca_params)
}

/// Issues one more certificate (`<stem>.pem`/`<stem>.key`, identity `identity_uri`) from the dev
/// CA that [`generate_dev_pki`] wrote into `dir` — a node added later, or a second operator.
pub fn issue_from_dev_ca(
    dir: &Path,
    stem: &str,
    identity_uri: &str,
    sans: &[String],
) -> Result<(), ClusterError> {
    let ca_key = std::fs::read_to_string(dir.join("ca.key")).map_err(err)?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(err)?;
    let ca = rcgen::Issuer::new(ca_params()?, ca_key);
    leaf(dir, stem, sans, identity_uri, &ca)
}

fn leaf(
    dir: &Path,
    stem: &str,
    sans: &[String],
    identity_uri: &str,
    ca: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
) -> Result<(), ClusterError> {
    let key = KeyPair::generate().map_err(err)?;
    let mut sans = sans.to_vec();
    sans.push(stem.to_owned());
    let mut params = CertificateParams::new(sans).map_err(err)?;
    params
        .subject_alt_names
        .push(SanType::URI(identity_uri.try_into().map_err(err)?));
    params.distinguished_name = name(stem);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, ca).map_err(err)?;
    write(dir, &format!("{stem}.key"), &key.serialize_pem(), 0o600)?;
    write(dir, &format!("{stem}.pem"), &cert.pem(), 0o644)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Stella Signer");
    dn
}

fn write(dir: &Path, file: &str, text: &str, mode: u32) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(dir.join(file))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::identity::{PeerRole, role_of_certificate};

    #[test]
    fn each_dev_certificate_names_its_role_in_its_cluster() {
        let dir = tempfile::tempdir().expect("tmp");
        generate_dev_pki(dir.path(), "prod", 2, &[]).expect("pki");
        let der = |stem: &str| {
            CertificateDer::from_pem_file(dir.path().join(format!("{stem}.pem"))).expect("pem")
        };
        assert_eq!(
            role_of_certificate(&der("node-2"), "prod"),
            Ok(PeerRole::Node(2))
        );
        assert_eq!(
            role_of_certificate(&der("admin"), "prod"),
            Ok(PeerRole::Operator("admin".into()))
        );
        assert_eq!(
            role_of_certificate(&der("node-1"), "staging"),
            Err(identity::IdentityError::OtherCluster("prod".into()))
        );
        assert_eq!(
            role_of_certificate(&der("ca"), "prod"),
            Err(identity::IdentityError::Missing)
        );
        assert!(generate_dev_pki(dir.path(), "a/b", 1, &[]).is_err());
    }
}
