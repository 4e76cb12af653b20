//! dr's own connections to PostgreSQL (the consistency transaction, target checks, globals). The parameters
//! are resolved like libpq's (`ConnInfo::try_resolve`: connection string, service file, environment,
//! defaults), and TLS follows libpq's rules (see [`tls`]), with libpq's TLS-version, SNI, direct-TLS, keepalive
//! and TCP-timeout keywords applied, so this connection reaches the same server as the pg_dump that imports its
//! snapshot, and authenticates and travels the same way, or fails saying why.

use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation, TargetSessionAttrs};

use super::conninfo::{ConnInfo, ConnInfoError, Resolved};

mod tls;

/// A [`ConnInfoError::Invalid`] with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => { ConnInfoError::Invalid(format!($($arg)*)) };
}

/// Why a connection could not be made. Its Display is the one line dr shows; the failure underneath stays the
/// source.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The parameters cannot be used by dr's own connection (a bad value, a refused keyword, an unreadable
    /// service file): a configuration problem, found before any connection attempt.
    #[error(transparent)]
    Parameters(#[from] ConnInfoError),
    /// TLS could not be set up from the files the parameters name (root certificates, client key, CRLs).
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// The database does not exist on the server (a restore can create it).
    #[error("{message}")]
    MissingDatabase { message: String, source: tokio_postgres::Error },
    /// The server asked for a password and none was found: for whom, and the password file looked in.
    #[error("{message}")]
    MissingPassword {
        user: String,
        passfile: Option<std::path::PathBuf>,
        message: String,
        source: tokio_postgres::Error,
    },
    /// Anything else the driver or the server reported; `message` is [`describe`] of it.
    #[error("{message}")]
    Failed { message: String, source: tokio_postgres::Error },
}

impl ConnectError {
    /// The error of a source's connection, `target` as messages show it.
    pub fn into_error(self, source_name: &str, target: String) -> crate::Error {
        let source_name = source_name.to_string();
        match self {
            ConnectError::MissingPassword { user, passfile, source, .. } => {
                crate::Error::DatabasePasswordMissing { source_name, target, user, passfile, source }
            }
            other => crate::Error::Database {
                source_name,
                target,
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}

/// Connects with the parameters libpq would use for `conninfo` in this environment.
pub async fn connect(conninfo: &ConnInfo) -> Result<tokio_postgres::Client, ConnectError> {
    let resolved = conninfo.try_resolve(&|key| std::env::var(key).ok())?;
    let config = client_config(&resolved)?;
    let tls = tls::connector(&resolved)?;
    let (client, connection) = config.connect(tls).await.map_err(|source| {
        let message = describe(&source);
        if source.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) {
            ConnectError::MissingDatabase { message, source }
        } else if resolved.password.is_none() && refused_before_the_server_answered(&source) {
            ConnectError::MissingPassword {
                user: resolved.user.clone(),
                passfile: resolved.passfile.clone(),
                message,
                source,
            }
        } else {
            ConnectError::Failed { message, source }
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Whether the driver gave up on its own during authentication: neither the server (no error response, the
/// connection not closed by it) nor the network or TLS (no I/O error anywhere in the chain) failed. With no
/// password to give, that is tokio-postgres refusing to answer the server's password request (cleartext, MD5
/// or SCRAM). Decided on these typed facts and on knowing that dr had no password, never on the driver's
/// wording. The other refusals of that kind need what dr never has either (GSSAPI/SSPI, which the server
/// chose) or a `channel_binding=require` the server cannot meet, which a password would not cure; dr reports
/// those as a missing password too, which at worst asks for a password the server would also want.
fn refused_before_the_server_answered(e: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = cause {
        if inner.is::<std::io::Error>() {
            return false;
        }
        cause = inner.source();
    }
    e.as_db_error().is_none() && !e.is_closed()
}

/// A driver's failure on a source's database as dr's error: the one-line [`describe`] shown, the failure kept as
/// its source.
pub fn database_error(source_name: &str, target: &str, e: tokio_postgres::Error) -> crate::Error {
    crate::Error::Database {
        source_name: source_name.to_string(),
        target: target.to_string(),
        message: describe(&e),
        source: Some(Box::new(e)),
    }
}

/// A tokio-postgres error as one line: the server's message when there is one, with its detail.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => crate::error::chain(e),
    }
}

fn client_config(r: &Resolved) -> Result<tokio_postgres::Config, ConnInfoError> {
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
            config.hostaddr(addr.parse().map_err(|_| invalid!("hostaddr {addr:?} is not an IP address"))?);
        }
    }
    for port in r.port.split(',') {
        let port = if port.is_empty() { "5432" } else { port };
        config.port(port.parse().map_err(|_| invalid!("port {port:?} is not a number"))?);
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
            timeout.parse().map_err(|_| invalid!("connect_timeout {timeout:?} is not a number of seconds"))?;
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
        Some(other) => return Err(invalid!("target_session_attrs {other:?} is not supported")),
    }
    config.channel_binding(match r.channel_binding.as_deref() {
        Some("disable") => ChannelBinding::Disable,
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("require") => ChannelBinding::Require,
        Some(other) => return Err(invalid!("channel_binding {other:?} is not one of disable, prefer, require")),
    });
    let t = &r.transport;
    if t.direct_tls {
        config.ssl_negotiation(SslNegotiation::Direct);
    }
    config.keepalives(t.keepalives);
    if let Some(idle) = t.keepalives_idle {
        config.keepalives_idle(idle);
    }
    if let Some(interval) = t.keepalives_interval {
        config.keepalives_interval(interval);
    }
    if let Some(count) = t.keepalives_count {
        config.keepalives_retries(count);
    }
    if let Some(timeout) = t.tcp_user_timeout {
        config.tcp_user_timeout(timeout);
    }
    config.ssl_mode(match r.sslmode.as_str() {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" | "verify-ca" | "verify-full" => SslMode::Require,
        other => {
            return Err(invalid!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    });
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(conninfo: &str) -> Result<tokio_postgres::Config, String> {
        client_config(&ConnInfo::parse(conninfo).unwrap().try_resolve(&|_| None).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn channel_binding_follows_libpq() {
        assert_eq!(config("host=db").unwrap().get_channel_binding(), ChannelBinding::Prefer);
        assert_eq!(config("host=db channel_binding=require").unwrap().get_channel_binding(), ChannelBinding::Require);
        assert_eq!(config("host=db channel_binding=disable").unwrap().get_channel_binding(), ChannelBinding::Disable);
        let error = config("host=db channel_binding=always").unwrap_err().to_string();
        assert!(error.contains("channel_binding \"always\""), "{error}");
    }

    #[test]
    fn the_password_and_timeouts_reach_the_driver() {
        let c = config("host=db port=6543 user=app password=pw dbname=site connect_timeout=0").unwrap();
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!((c.get_user(), c.get_dbname()), (Some("app"), Some("site")));
        assert_eq!(c.get_connect_timeout(), None, "0 waits forever, as in libpq");
        assert_eq!(config("host=db").unwrap().get_connect_timeout(), Some(&Duration::from_secs(30)));
        assert_eq!(config("host=db").unwrap().get_application_name(), Some("dr"));
    }

    #[test]
    fn keepalives_timeouts_and_direct_tls_reach_the_driver() {
        let c = config(
            "host=db sslmode=require sslnegotiation=direct keepalives=0 keepalives_idle=30 keepalives_interval=5 \
             keepalives_count=4 tcp_user_timeout=9000",
        )
        .unwrap();
        assert_eq!(c.get_ssl_negotiation(), SslNegotiation::Direct);
        assert!(!c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(5)));
        assert_eq!(c.get_keepalives_retries(), Some(4));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_millis(9000)));
        let c = config("host=db").unwrap();
        assert_eq!(c.get_ssl_negotiation(), SslNegotiation::Postgres);
        assert!(c.get_keepalives(), "on by default, as in libpq");
        assert_eq!(c.get_tcp_user_timeout(), None);
    }

    #[tokio::test]
    async fn a_failed_connection_keeps_the_driver_s_error_as_its_source() {
        // Nothing listens on port 1; the refusal is the network's, not a missing password's.
        let conninfo = ConnInfo::parse("host=127.0.0.1 port=1 user=app dbname=site sslmode=disable").unwrap();
        let error = connect(&conninfo).await.unwrap_err();
        assert!(matches!(error, ConnectError::Failed { .. }), "{error:?}");
        let error = error.into_error("app", conninfo.redacted());
        assert!(matches!(error, crate::Error::Database { .. }), "{error:?}");
        let source = std::error::Error::source(&error).expect("the driver's failure is kept");
        assert_eq!(
            error.to_string(),
            format!("database app@127.0.0.1:1/site (source \"app\"): {source}"),
            "the message is the driver's, once"
        );
        let driver = source.source().expect("and under it the driver's own error");
        assert!(driver.is::<tokio_postgres::Error>(), "{driver:?}");
    }

    #[test]
    fn a_bad_parameter_is_a_typed_configuration_error() {
        assert!(matches!(ConnInfo::parse("hots=x"), Err(ConnInfoError::Syntax(_))));
        assert!(matches!(ConnInfo::parse("host=db gssencmode=require"), Err(ConnInfoError::Refused(_))));
        assert!(matches!(ConnInfo::parse("host=db sslsni=2"), Err(ConnInfoError::Invalid(_))));
        let resolved = ConnInfo::parse("host=db port=x").unwrap().try_resolve(&|_| None).unwrap();
        assert!(matches!(client_config(&resolved), Err(ConnInfoError::Invalid(_))));
    }
}
