//! dr's own connections to PostgreSQL (the consistency transaction, target checks, globals). The parameters
//! are resolved like libpq's (`ConnInfo::try_resolve`: connection string, service file, environment,
//! defaults), and TLS follows libpq's rules (see [`tls`]), so this connection reaches the same server as the
//! pg_dump that imports its snapshot, and authenticates the same way, or fails saying why.

use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, SslMode, TargetSessionAttrs};

use super::conninfo::{ConnInfo, Resolved};

mod tls;

/// Why a connection could not be made; `missing_database` lets callers create the database.
#[derive(Debug)]
pub struct ConnectError {
    pub message: String,
    pub missing_database: bool,
    /// The server asked for a password and none was found: for whom, and the password file looked in.
    pub missing_password: Option<(String, Option<std::path::PathBuf>)>,
}

impl ConnectError {
    /// The error of a source's connection, `target` as messages show it.
    pub fn into_error(self, source_name: &str, target: String) -> crate::Error {
        let source_name = source_name.to_string();
        match self.missing_password {
            Some((user, passfile)) => crate::Error::DatabasePasswordMissing { source_name, target, user, passfile },
            None => crate::Error::Database { source_name, target, message: self.message },
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Connects with the parameters libpq would use for `conninfo` in this environment.
pub async fn connect(conninfo: &ConnInfo) -> Result<tokio_postgres::Client, ConnectError> {
    let fail = |message: String| ConnectError { message, missing_database: false, missing_password: None };
    let resolved = conninfo.try_resolve(&|key| std::env::var(key).ok()).map_err(fail)?;
    let config = client_config(&resolved).map_err(fail)?;
    let tls = tls::connector(&resolved).map_err(fail)?;
    let (client, connection) = config.connect(tls).await.map_err(|e| ConnectError {
        missing_database: e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME),
        // tokio-postgres says so only in its message ("invalid configuration: password missing"), which reads as
        // if dr.toml were wrong; it can only happen when no password was found.
        missing_password: (resolved.password.is_none()
            && e.as_db_error().is_none()
            && crate::error::chain(&e).ends_with("password missing"))
        .then(|| (resolved.user.clone(), resolved.passfile.clone())),
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
        None => crate::error::chain(e),
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
    config.channel_binding(match r.channel_binding.as_deref() {
        Some("disable") => ChannelBinding::Disable,
        None | Some("prefer") => ChannelBinding::Prefer,
        Some("require") => ChannelBinding::Require,
        Some(other) => return Err(format!("channel_binding {other:?} is not one of disable, prefer, require")),
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(conninfo: &str) -> Result<tokio_postgres::Config, String> {
        client_config(&ConnInfo::parse(conninfo).unwrap().try_resolve(&|_| None).unwrap())
    }

    #[test]
    fn channel_binding_follows_libpq() {
        assert_eq!(config("host=db").unwrap().get_channel_binding(), ChannelBinding::Prefer);
        assert_eq!(config("host=db channel_binding=require").unwrap().get_channel_binding(), ChannelBinding::Require);
        assert_eq!(config("host=db channel_binding=disable").unwrap().get_channel_binding(), ChannelBinding::Disable);
        let error = config("host=db channel_binding=always").unwrap_err();
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
}
