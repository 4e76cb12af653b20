//! dr's own connections to PostgreSQL (the consistency transaction, target checks, globals), with TLS that
//! follows libpq's `sslmode` semantics: `prefer`/`require` encrypt without verifying the certificate (as
//! libpq does), `verify-ca` checks the chain, `verify-full` the chain and the host name.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{SslMode, TargetSessionAttrs};

use super::conninfo::{ConnInfo, Resolved};

/// Why a connection could not be made; `missing_database` lets callers create the database.
#[derive(Debug)]
pub struct ConnectError {
    pub message: String,
    pub missing_database: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Connects with the parameters libpq would use for `conninfo` in this environment.
pub async fn connect(conninfo: &ConnInfo) -> Result<tokio_postgres::Client, ConnectError> {
    let resolved = conninfo.resolve(&|key| std::env::var(key).ok());
    let fail = |message: String| ConnectError { message, missing_database: false };
    let config = client_config(&resolved).map_err(fail)?;
    let tls = tls_connector(&resolved).map_err(fail)?;
    let (client, connection) = config.connect(tls).await.map_err(|e| ConnectError {
        missing_database: e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME),
        message: describe(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// A tokio-postgres error as one line: the server's message when there is one, with its detail.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn client_config(r: &Resolved) -> Result<tokio_postgres::Config, String> {
    let mut config = tokio_postgres::Config::new();
    let hosts: Vec<&str> = r.host.split(',').collect();
    for host in &hosts {
        if host.starts_with('/') {
            config.host_path(host);
        } else {
            config.host(*host);
        }
    }
    if let Some(hostaddr) = &r.hostaddr {
        for addr in hostaddr.split(',') {
            config.hostaddr(addr.parse().map_err(|_| format!("hostaddr {addr:?} is not an IP address"))?);
        }
    }
    for port in r.port.split(',') {
        let port = if port.is_empty() { "5432" } else { port };
        config.port(port.parse().map_err(|_| format!("port {port:?} is not a number"))?);
    }
    config.user(&r.user).dbname(&r.dbname);
    if let Some(password) = &r.password {
        config.password(password);
    }
    config.application_name(r.application_name.as_deref().unwrap_or("dr"));
    if let Some(options) = &r.options {
        config.options(options);
    }
    if let Some(timeout) = &r.connect_timeout {
        let secs: u64 =
            timeout.parse().map_err(|_| format!("connect_timeout {timeout:?} is not a number of seconds"))?;
        if secs > 0 {
            config.connect_timeout(Duration::from_secs(secs.max(2)));
        }
    } else {
        // libpq waits forever by default; a backup job that hangs on a dead host helps no one.
        config.connect_timeout(Duration::from_secs(30));
    }
    match r.target_session_attrs.as_deref() {
        None | Some("any") => {}
        Some("read-write") => {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        Some("read-only") => {
            config.target_session_attrs(TargetSessionAttrs::ReadOnly);
        }
        Some(other) => return Err(format!("target_session_attrs {other:?} is not supported")),
    }
    config.ssl_mode(match r.sslmode.as_str() {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" | "verify-ca" | "verify-full" => SslMode::Require,
        other => {
            return Err(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    });
    Ok(config)
}

fn tls_connector(r: &Resolved) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // libpq: with a root certificate, `require` behaves like `verify-ca`.
    let mode = match (r.sslmode.as_str(), &r.sslrootcert) {
        ("require", Some(_)) => "verify-ca",
        (mode, _) => mode,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        "verify-ca" | "verify-full" => {
            let roots = Arc::new(root_store(r.sslrootcert.as_deref())?);
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("TLS set-up: {e}"))?;
            Arc::new(Verifying { inner: webpki, check_host_name: mode == "verify-full" })
        }
        _ => Arc::new(EncryptOnly { provider: provider.clone() }),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn root_store(sslrootcert: Option<&str>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match sslrootcert {
        Some(path) if path != "system" => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))? {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates for sslmode=verify-*: set sslrootcert".to_string());
    }
    Ok(roots)
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
