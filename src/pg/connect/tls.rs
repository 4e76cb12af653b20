//! TLS for dr's own connection, following libpq (`fe-secure-openssl.c`), which is what pg_dump uses:
//!
//! - `sslmode`: `prefer`/`allow`/`require` encrypt without verifying the certificate, `verify-ca` checks the
//!   chain, `verify-full` the chain and the host name. Root certificates come from `sslrootcert`, else
//!   `~/.postgresql/root.crt`; when that file exists, `require` checks the chain too. `sslrootcert=system`
//!   takes the system's trusted roots. Revocation lists from `sslcrl` (else `~/.postgresql/root.crl`) and
//!   `sslcrldir` apply whenever the chain is checked.
//! - The client certificate: `sslcert` (else `~/.postgresql/postgresql.crt`) when that file exists, with the
//!   key in `sslkey` (else `~/.postgresql/postgresql.key`), presented when the server asks. A key file others
//!   can read, or an encrypted one, is refused, as libpq refuses the first and cannot use the second without
//!   `sslpassword` (which dr never hands to pg_dump).
//! - Over a unix socket there is no TLS, and libpq reads none of these files; neither does dr.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject,
};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::pg::conninfo::{Resolved, TlsVersion};

/// TLS could not be set up from the files the connection parameters name: which file, what is wrong with it,
/// and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(String);

impl From<String> for TlsSetupError {
    fn from(message: String) -> TlsSetupError {
        TlsSetupError(message)
    }
}

/// A [`TlsSetupError`] with a formatted message.
macro_rules! tls_error {
    ($($arg:tt)*) => { TlsSetupError(format!($($arg)*)) };
}

/// The TLS set-up libpq would make for these parameters; the files it names are read now, so a bad key fails
/// before any connection attempt.
pub(super) fn connector(r: &Resolved) -> Result<tokio_postgres_rustls::MakeRustlsConnect, TlsSetupError> {
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(client_config(r)?))
}

/// The rustls configuration behind [`connector`]: verification, client certificate, protocol versions, SNI.
fn client_config(r: &Resolved) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let over_tcp = r.hostaddr.is_some() || r.host.split(',').any(|h| !h.starts_with('/') && !h.starts_with('@'));
    let uses_tls = over_tcp && r.sslmode != "disable";
    let checked = if uses_tls { verification(r)? } else { None };
    let verifier: Arc<dyn ServerCertVerifier> = match checked {
        Some(Verification { roots, check_host_name }) => {
            let roots = Arc::new(roots);
            let verifier = |crls: Vec<CertificateRevocationListDer<'static>>| {
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .with_crls(crls)
                    .build()
            };
            let lists = revocation_lists(r)?;
            let webpki = verifier(lists.iter().flat_map(|(_, crls)| crls.iter().cloned()).collect()).map_err(|e| {
                // Name the file that holds the list webpki cannot parse.
                let culprit = lists.iter().find(|(_, crls)| verifier(crls.clone()).is_err());
                match culprit {
                    Some((file, _)) => format!("revocation list {} (sslcrl/sslcrldir): {e}", file.display()),
                    None => format!("TLS set-up: {e}"),
                }
            })?;
            Arc::new(Verifying { inner: webpki, check_host_name })
        }
        None => Arc::new(EncryptOnly { provider: provider.clone() }),
    };
    let t = &r.transport;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&protocol_versions(t.tls_min, t.tls_max))
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let identity = if uses_tls && r.sslcertmode != "disable" { client_identity(r)? } else { None };
    let mut config = match identity {
        Some(ClientIdentity { chain, key, cert_file, key_file }) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the client certificate {} (sslcert) does not match the private key {} (sslkey): point both \
                     at the same pair",
                    cert_file.display(),
                    key_file.display()
                ),
                e => format!("client certificate {} with key {}: {e}", cert_file.display(), key_file.display()),
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = t.sni;
    if t.direct_tls {
        // A PostgreSQL 17 server accepts a direct handshake only with its ALPN protocol, as libpq sends it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Ok(config)
}

/// The TLS versions from `ssl_min_protocol_version` to `ssl_max_protocol_version` (checked to be a range).
fn protocol_versions(min: TlsVersion, max: TlsVersion) -> Vec<&'static rustls::SupportedProtocolVersion> {
    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(version, _)| (min..=max).contains(version))
        .map(|(_, supported)| supported)
        .collect()
}

/// How the server's certificate is checked, when it is.
struct Verification {
    roots: rustls::RootCertStore,
    check_host_name: bool,
}

/// `None` when the certificate is not checked (encryption only).
fn verification(r: &Resolved) -> Result<Option<Verification>, TlsSetupError> {
    let root_file = match r.sslrootcert.as_deref() {
        Some("system") => None,
        other => r.file_or_default(other, "root.crt"),
    };
    let system = r.sslrootcert.as_deref() == Some("system");
    let have_roots = system || root_file.as_deref().is_some_and(Path::exists);
    let check_host_name = match r.sslmode.as_str() {
        "verify-full" => true,
        "verify-ca" => false,
        // libpq: with a root certificate, `require` behaves like `verify-ca`.
        "require" if have_roots => false,
        _ => return Ok(None),
    };
    if !have_roots {
        let what = match &root_file {
            Some(path) => format!("{} does not exist", path.display()),
            None => "sslrootcert is not set and there is no home directory for ~/.postgresql/root.crt".to_string(),
        };
        return Err(tls_error!(
            "sslmode={} needs the certificate of the authority that signed the server's, and {what}: set \
             sslrootcert to that file, or sslrootcert=system to trust the system's certificate authorities",
            r.sslmode
        ));
    }
    let roots = match root_file.filter(|_| !system) {
        Some(path) => root_store_from_file(&path)?,
        None => system_root_store()?,
    };
    Ok(Some(Verification { roots, check_host_name }))
}

fn root_store_from_file(path: &Path) -> Result<rustls::RootCertStore, TlsSetupError> {
    let shown = path.display();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {shown}: {e}"))? {
        let cert = cert.map_err(|e| format!("sslrootcert {shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(tls_error!("sslrootcert {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(roots)
}

fn system_root_store() -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err("sslrootcert=system, but this system has no trusted root certificates: set sslrootcert to the \
                    file of the authority that signed the server's certificate"
            .to_string()
            .into());
    }
    Ok(roots)
}

/// `sslcrl` (else `~/.postgresql/root.crl`) when it exists, and the `HASH.rN` files of `sslcrldir` (OpenSSL's
/// lookup directory); missing ones are skipped, as libpq skips them.
fn revocation_lists(r: &Resolved) -> Result<Vec<(PathBuf, Vec<CertificateRevocationListDer<'static>>)>, TlsSetupError> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(file) = r.file_or_default(r.sslcrl.as_deref(), "root.crl") {
        files.push(file);
    }
    if let Some(dir) = r.sslcrldir.as_deref().filter(|d| !d.is_empty())
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(is_hashed_crl_name))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut lists = Vec::new();
    for file in files.into_iter().filter(|f| f.is_file()) {
        let shown = file.display().to_string();
        let mut crls = Vec::new();
        for crl in CertificateRevocationListDer::pem_file_iter(&file).map_err(|e| format!("sslcrl {shown}: {e}"))? {
            crls.push(crl.map_err(|e| format!("sslcrl {shown}: {e}"))?);
        }
        lists.push((file, crls));
    }
    Ok(lists)
}

/// `0a1b2c3d.r0`: eight hex digits, `.r`, a number.
fn is_hashed_crl_name(name: &str) -> bool {
    name.split_once(".r").is_some_and(|(hash, n)| {
        hash.len() == 8
            && hash.chars().all(|c| c.is_ascii_hexdigit())
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
    })
}

/// A client certificate chain and its key, with the files they came from (for messages).
struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// The client certificate libpq would present, or `None` when there is none (libpq then goes on without one,
/// and a server that wants one says so).
fn client_identity(r: &Resolved) -> Result<Option<ClientIdentity>, TlsSetupError> {
    let Some(cert_file) = r.file_or_default(r.sslcert.as_deref(), "postgresql.crt") else {
        return Ok(None);
    };
    match std::fs::metadata(&cert_file) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            if r.sslcert.as_deref().is_some_and(|v| !v.is_empty()) {
                tracing::warn!(
                    sslcert = %cert_file.display(),
                    "the client certificate file does not exist; connecting without one, as libpq does"
                );
            }
            return Ok(None);
        }
        Err(e) => return Err(tls_error!("cannot read the client certificate {} (sslcert): {e}", cert_file.display())),
    }
    let shown = cert_file.display();
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_file_iter(&cert_file).map_err(|e| format!("sslcert {shown}: {e}"))? {
        chain.push(cert.map_err(|e| format!("sslcert {shown}: {e}"))?);
    }
    if chain.is_empty() {
        return Err(tls_error!("sslcert {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    let key_file = r.file_or_default(r.sslkey.as_deref(), "postgresql.key").ok_or_else(|| {
        format!("the client certificate {shown} (sslcert) has no key: set sslkey to its private key file")
    })?;
    let key = read_private_key(&key_file, &cert_file)?;
    Ok(Some(ClientIdentity { chain, key, cert_file, key_file }))
}

/// Reads a client key with libpq's checks: it exists, is a regular file, is not readable by others, and (for
/// dr) is not encrypted. Never puts key material into a message.
fn read_private_key(path: &Path, cert_file: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(tls_error!(
                "the client certificate {} (sslcert) is present, but its private key {shown} (sslkey) is not: \
                 set sslkey to the certificate's key file",
                cert_file.display()
            ));
        }
        Err(e) => return Err(tls_error!("cannot read the private key {shown} (sslkey): {e}")),
    };
    if !meta.is_file() {
        return Err(tls_error!("the private key {shown} (sslkey) is not a regular file"));
    }
    check_key_mode(path, meta.uid(), meta.mode())?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the private key {shown} (sslkey): {e}"))?;
    if is_encrypted_pem(&bytes) {
        return Err(tls_error!(
            "the private key {shown} (sslkey) is encrypted, and dr cannot use sslpassword (its own connection \
             cannot decrypt keys, and pg_dump never receives the password): store the key unencrypted, mode 0600 \
             (openssl pkey -in {shown} -out NEW.key), and point sslkey at it"
        ));
    }
    let not_a_key = || {
        format!(
            "the private key {shown} (sslkey) holds no usable key: expected PEM (\"PRIVATE KEY\" PKCS#8, \"RSA \
             PRIVATE KEY\" PKCS#1 or \"EC PRIVATE KEY\" SEC1) or DER"
        )
    };
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        // libpq falls back to DER when the file is not PEM.
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            PrivateKeyDer::try_from(bytes).map_err(|_| not_a_key().into())
        }
        Err(e) => Err(tls_error!("the private key {shown} (sslkey): {e}")),
    }
}

/// libpq refuses a key file with group or world access: 0600 or less for a file owned by the user, 0640 or less
/// for one owned by root (so a group can share a system-wide key).
fn check_key_mode(path: &Path, owner: u32, mode: u32) -> Result<(), TlsSetupError> {
    let forbidden = if owner == 0 { 0o037 } else { 0o077 };
    if mode & forbidden == 0 {
        return Ok(());
    }
    let shown = path.display();
    Err(tls_error!(
        "the private key {shown} (sslkey) has group or world access (mode {:04o}); it must be 0600 or less when \
         owned by the user dr runs as, or 0640 or less when owned by root, as libpq requires: chmod 600 {shown}",
        mode & 0o7777
    ))
}

/// A PEM key protected by a passphrase: PKCS#8 `ENCRYPTED PRIVATE KEY`, or the traditional OpenSSL header.
fn is_encrypted_pem(bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    contains(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(b"Proc-Type: 4,ENCRYPTED")
}

/// `verify-ca` / `verify-full`: webpki's verdict, with the host-name mismatch forgiven for `verify-ca`.
#[derive(Debug)]
struct Verifying {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_host_name: bool,
}

impl ServerCertVerifier for Verifying {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.check_host_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` / `require`: encrypt, check the handshake signatures, but trust any certificate (libpq's meaning).
#[derive(Debug)]
struct EncryptOnly {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::pg::ConnInfo;

    const EC_CERT: &str = include_str!("testdata/ec-cert.pem");
    const EC_KEY_PKCS8: &str = include_str!("testdata/ec-key.pkcs8.pem");
    const EC_KEY_SEC1: &str = include_str!("testdata/ec-key.sec1.pem");
    const EC_KEY_ENCRYPTED: &str = include_str!("testdata/ec-key.encrypted.pem");
    const RSA_CERT: &str = include_str!("testdata/rsa-cert.pem");
    const RSA_KEY_PKCS1: &str = include_str!("testdata/rsa-key.pkcs1.pem");
    const EC_ROOT_CRL: &str = include_str!("testdata/ec-root.crl.pem");

    /// `conninfo` resolved with HOME (and nothing else) from the environment.
    fn resolved(conninfo: &str, home: &Path) -> Resolved {
        let home = home.display().to_string();
        ConnInfo::parse(conninfo).unwrap().try_resolve(&|key| (key == "HOME").then(|| home.clone())).unwrap()
    }

    fn write(path: &Path, contents: impl AsRef<[u8]>, mode: u32) -> String {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    }

    fn identity_error(conninfo: &str, home: &Path) -> String {
        match client_identity(&resolved(conninfo, home)) {
            Ok(found) => panic!("expected an error, found an identity: {}", found.is_some()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn pkcs8_sec1_pkcs1_and_der_keys_are_presented() {
        let dir = tempfile::tempdir().unwrap();
        let der = PrivateKeyDer::from_pem_slice(EC_KEY_PKCS8.as_bytes()).unwrap().secret_der().to_vec();
        let cases: [(&str, &[u8], &str); 4] = [
            ("pkcs8", EC_KEY_PKCS8.as_bytes(), EC_CERT),
            ("sec1", EC_KEY_SEC1.as_bytes(), EC_CERT),
            ("pkcs1", RSA_KEY_PKCS1.as_bytes(), RSA_CERT),
            ("der", &der, EC_CERT),
        ];
        for (name, key, cert) in cases {
            let cert = write(&dir.path().join(format!("{name}.crt")), cert, 0o644);
            let key = write(&dir.path().join(format!("{name}.key")), key, 0o600);
            let conninfo = format!("host=db sslmode=require sslcert={cert} sslkey={key}");
            let identity = client_identity(&resolved(&conninfo, dir.path())).unwrap().expect(name);
            assert_eq!(identity.chain.len(), 1);
            connector(&resolved(&conninfo, dir.path())).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn the_default_files_in_dot_postgresql_are_used_when_they_exist() {
        let home = tempfile::tempdir().unwrap();
        assert!(client_identity(&resolved("host=db", home.path())).unwrap().is_none());
        write(&home.path().join(".postgresql/postgresql.crt"), EC_CERT, 0o644);
        write(&home.path().join(".postgresql/postgresql.key"), EC_KEY_SEC1, 0o600);
        let identity = client_identity(&resolved("host=db", home.path())).unwrap().unwrap();
        assert!(identity.key_file.ends_with(".postgresql/postgresql.key"));
        // An empty value counts as unset, as in libpq.
        assert!(client_identity(&resolved("host=db sslcert='' sslkey=''", home.path())).unwrap().is_some());
        // A named certificate that does not exist means no certificate, as in libpq.
        let missing = home.path().join("missing.crt").display().to_string();
        assert!(client_identity(&resolved(&format!("host=db sslcert={missing}"), home.path())).unwrap().is_none());
    }

    #[test]
    fn a_key_others_can_read_is_refused_naming_the_file_and_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(&dir.path().join("c.crt"), EC_CERT, 0o644);
        let key = write(&dir.path().join("c.key"), EC_KEY_PKCS8, 0o644);
        let error = identity_error(&format!("host=db sslcert={cert} sslkey={key}"), dir.path());
        assert!(error.contains(&key) && error.contains("(mode 0644)"), "{error}");
        assert!(error.contains("0600 or less") && error.contains(&format!("chmod 600 {key}")), "{error}");
        assert!(!error.contains(EC_KEY_PKCS8.lines().nth(1).unwrap()), "{error}");
        // libpq's rule: 0600 for the user's own file, 0640 for one owned by root.
        let path = Path::new("/k");
        assert!(check_key_mode(path, 1000, 0o100600).is_ok());
        assert!(check_key_mode(path, 1000, 0o100400).is_ok());
        assert!(check_key_mode(path, 1000, 0o100640).is_err());
        assert!(check_key_mode(path, 0, 0o100640).is_ok());
        assert!(check_key_mode(path, 0, 0o100660).is_err());
        assert!(check_key_mode(path, 0, 0o100604).is_err());
    }

    #[test]
    fn an_encrypted_key_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(&dir.path().join("c.crt"), EC_CERT, 0o644);
        let key = write(&dir.path().join("c.key"), EC_KEY_ENCRYPTED, 0o600);
        let conninfo = format!("host=db sslcert={cert} sslkey={key} sslpassword=test");
        let error = identity_error(&conninfo, dir.path());
        assert!(error.contains(&key) && error.contains("is encrypted") && error.contains("sslpassword"), "{error}");
        assert!(error.contains("openssl pkey"), "{error}");
        assert!(!error.contains("=test") && !error.contains(EC_KEY_ENCRYPTED.lines().nth(1).unwrap()), "{error}");
        // The traditional OpenSSL form, too.
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n\
                      -----END EC PRIVATE KEY-----\n";
        write(Path::new(&key), legacy, 0o600);
        assert!(identity_error(&conninfo, dir.path()).contains("is encrypted"));
    }

    #[test]
    fn broken_pairs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(&dir.path().join("c.crt"), EC_CERT, 0o644);
        let missing = dir.path().join("missing.key").display().to_string();
        let error = identity_error(&format!("host=db sslcert={cert} sslkey={missing}"), dir.path());
        assert!(error.contains(&format!("{cert} (sslcert) is present, but its private key {missing}")), "{error}");
        let not_a_key = write(&dir.path().join("junk.key"), "hello\n", 0o600);
        let error = identity_error(&format!("host=db sslcert={cert} sslkey={not_a_key}"), dir.path());
        assert!(error.contains("holds no usable key"), "{error}");
        let rsa_key = write(&dir.path().join("rsa.key"), RSA_KEY_PKCS1, 0o600);
        let Err(error) = connector(&resolved(&format!("host=db sslcert={cert} sslkey={rsa_key}"), dir.path())) else {
            panic!("a certificate with another key's pair must be refused");
        };
        let error = error.to_string();
        assert!(error.contains("does not match the private key"), "{error}");
    }

    #[test]
    fn no_client_files_are_read_without_tls() {
        let home = tempfile::tempdir().unwrap();
        write(&home.path().join(".postgresql/postgresql.crt"), EC_CERT, 0o644);
        write(&home.path().join(".postgresql/postgresql.key"), EC_KEY_PKCS8, 0o666);
        assert!(connector(&resolved("host=db", home.path())).is_err(), "the bad key is used over TCP");
        connector(&resolved("host=db sslmode=disable", home.path())).unwrap();
        connector(&resolved("host=db sslcertmode=disable", home.path())).unwrap();
        connector(&resolved("host=/var/run/postgresql", home.path())).unwrap();
    }

    #[test]
    fn root_certificates_follow_libpq() {
        let home = tempfile::tempdir().unwrap();
        let error = verification(&resolved("host=db sslmode=verify-full", home.path())).err().unwrap().to_string();
        assert!(
            error.contains(".postgresql/root.crt does not exist") && error.contains("sslrootcert=system"),
            "{error}"
        );
        assert!(verification(&resolved("host=db sslmode=require", home.path())).unwrap().is_none());
        write(&home.path().join(".postgresql/root.crt"), EC_CERT, 0o644);
        // With a root certificate, `require` checks the chain (not the name), as libpq does.
        let require = verification(&resolved("host=db sslmode=require", home.path())).unwrap().unwrap();
        assert!(!require.check_host_name);
        assert!(verification(&resolved("host=db sslmode=verify-full", home.path())).unwrap().unwrap().check_host_name);
        assert!(verification(&resolved("host=db sslmode=prefer", home.path())).unwrap().is_none());
        assert!(is_hashed_crl_name("0a1b2c3d.r0") && !is_hashed_crl_name("0a1b2c3d.0") && !is_hashed_crl_name("x.r1"));
    }

    #[test]
    fn revocation_lists_are_read_when_the_chain_is_checked() {
        let home = tempfile::tempdir().unwrap();
        write(&home.path().join(".postgresql/root.crt"), EC_CERT, 0o644);
        let crl = write(&home.path().join(".postgresql/root.crl"), EC_ROOT_CRL, 0o644);
        assert_eq!(revocation_lists(&resolved("host=db", home.path())).unwrap()[0].1.len(), 1);
        connector(&resolved("host=db sslmode=verify-ca", home.path())).unwrap();
        let dir = home.path().join("crls");
        write(&dir.join("0a1b2c3d.r0"), EC_ROOT_CRL, 0o644);
        write(&dir.join("README"), "not a CRL", 0o644);
        let conninfo = format!("host=db sslcrl=/nonexistent sslcrldir={}", dir.display());
        assert_eq!(revocation_lists(&resolved(&conninfo, home.path())).unwrap().len(), 1);
        write(Path::new(&crl), "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", 0o644);
        let Err(error) = connector(&resolved("host=db sslmode=verify-ca", home.path())) else {
            panic!("a broken revocation list must fail");
        };
        let error = error.to_string();
        assert!(error.contains(&crl), "{error}");
    }

    #[test]
    fn protocol_versions_sni_and_direct_tls_reach_rustls() {
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        let home = tempfile::tempdir().unwrap();
        let versions = |conninfo: &str| {
            let t = resolved(conninfo, home.path()).transport;
            protocol_versions(t.tls_min, t.tls_max).iter().map(|v| v.version).collect::<Vec<_>>()
        };
        assert_eq!(versions("host=db"), [TLSv1_2, TLSv1_3]);
        assert_eq!(versions("host=db ssl_min_protocol_version=TLSv1.3"), [TLSv1_3]);
        assert_eq!(versions("host=db ssl_max_protocol_version=TLSv1.2"), [TLSv1_2]);
        let config = |conninfo: &str| client_config(&resolved(conninfo, home.path())).unwrap();
        client_config(&resolved("host=db ssl_min_protocol_version=TLSv1.3", home.path())).unwrap();
        let default = config("host=db");
        assert!(default.enable_sni && default.alpn_protocols.is_empty());
        assert!(!config("host=db sslsni=0").enable_sni);
        let direct = config("host=db sslmode=require sslnegotiation=direct");
        assert_eq!(direct.alpn_protocols, vec![b"postgresql".to_vec()]);
    }
}
