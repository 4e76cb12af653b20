//! dr against a PostgreSQL that takes only TLS connections authenticated by a client certificate: dr's own
//! connection (the snapshot, the target checks, globals) and the tools' (pg_dump, pg_dumpall, pg_restore) must
//! both verify the server and present the certificate, from the same `sslrootcert`/`sslcert`/`sslkey`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{DATABASE, Site, fingerprint, run, sql, write_files};
use dr::pg::{ScratchOptions, ScratchPostgres};

const DEMO_SQL: &str = include_str!("../../src/demo/sample_site.sql");
const FIXTURE_SQL: &str = include_str!("../fixtures/site.sql");

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_over_tls_with_a_client_certificate() {
    let (site, client) = tls_site("dr-tls-", &[], &[DEMO_SQL, FIXTURE_SQL]).await;
    let tls_url = |dbname: &str| client.conninfo(site.db.port(), dbname);
    site.write_config("");
    let config = fs::read_to_string(&site.config_path).unwrap();
    let socket_url = site.db.url(DATABASE);
    assert!(config.contains(&socket_url), "{config}");
    fs::write(&site.config_path, config.replace(&socket_url, &tls_url(DATABASE))).unwrap();
    site.dr(&["init"]).ok();

    // A key others can read: refused by libpq, and by dr's own connection in the same words, before pg_dump runs.
    fs::set_permissions(&client.key, fs::Permissions::from_mode(0o644)).unwrap();
    let error = site.dr(&["backup"]).user_error(1);
    let key_path = client.key.display().to_string();
    assert!(error.contains(&format!("the private key {key_path} (sslkey) has group or world access")), "{error}");
    assert!(error.contains("0600") && error.contains(&format!("chmod 600 {key_path}")), "{error}");
    fs::set_permissions(&client.key, fs::Permissions::from_mode(0o600)).unwrap();

    let snapshot = site.backup();
    let restored = site.path("restored");
    site.dr_with(&["restore", "--to", &snapshot], &Site::into_args(&tls_url("restored"), &restored)).ok();

    let original = fingerprint(&site.db, DATABASE).await;
    assert!(original.len() >= 14, "the fixture has many tables: {original:?}");
    assert_eq!(fingerprint(&site.db, "restored").await, original, "every table, sequence and large object");

    // The same connection defined in a service file: dr's own connection must find the same server and files
    // there that pg_dump's libpq finds, or it would connect elsewhere (the default socket) and fail.
    let services = site.path("pg_service.conf");
    let service = tls_url("unused").replace("dbname=unused", "").split_whitespace().collect::<Vec<_>>().join("\n");
    fs::write(&services, format!("[dr-tls]\n{service}\n")).unwrap();
    let config = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, config.replace(&tls_url(DATABASE), &format!("service=dr-tls dbname={DATABASE}")))
        .unwrap();
    let second = run(site.command(&["backup"]).env("PGSERVICEFILE", &services)).ok().stdout.trim().to_string();
    assert_ne!(second, snapshot);
    // Without the service file the service is defined nowhere: refused, naming where dr looked.
    let error = run(site.command(&["backup"]).env("PGSERVICEFILE", site.path("none.conf")).env("HOME", site.path("")))
        .user_error(1);
    assert!(error.contains("service \"dr-tls\" is not defined in"), "{error}");
}

/// dr's own connection applies libpq's TLS protocol-version keywords as pg_dump's libpq does: against a server
/// that speaks TLS 1.3 only, `ssl_min_protocol_version=TLSv1.3` backs up (with the TCP keywords applied beside
/// it), and `ssl_max_protocol_version=TLSv1.2` fails in dr's own connection, saying so, before pg_dump runs.
#[tokio::test(flavor = "multi_thread")]
async fn tls_protocol_versions_and_tcp_keywords_apply_to_dr_s_own_connection() {
    let min_tls13 = [("ssl_min_protocol_version", "TLSv1.3")];
    let (site, client) = tls_site("dr-tls-versions-", &min_tls13, &[DEMO_SQL]).await;
    let tls_url = |extra: &str| format!("{} {extra}", client.conninfo(site.db.port(), DATABASE));
    site.write_config("");
    let config = fs::read_to_string(&site.config_path).unwrap();
    let socket_url = site.db.url(DATABASE);
    let with_url = |url: &str| fs::write(&site.config_path, config.replace(&socket_url, url)).unwrap();
    with_url(&tls_url("ssl_min_protocol_version=TLSv1.3 keepalives_idle=30 keepalives_count=3 tcp_user_timeout=20000"));
    site.dr(&["init"]).ok();
    site.backup();

    with_url(&tls_url("ssl_max_protocol_version=TLSv1.2"));
    let run = site.dr(&["backup"]);
    let all = run.all_output();
    let error = run.user_error(1);
    assert!(error.contains("database postgres@127.0.0.1:") && error.contains("(source \"app\")"), "{error}");
    assert!(error.contains("TLS handshake") && error.contains("ProtocolVersion"), "{error}");
    assert!(!all.contains("pg_dump failed"), "dr's own connection fails first: {all}");
}

/// A test certificate authority, the server's certificate (for 127.0.0.1) and a client certificate for the
/// `postgres` role, made with the `openssl` command-line tool.
struct Pki {
    server_dir: PathBuf,
}

/// A site whose PostgreSQL takes TCP connections only over TLS with a client certificate (plus `settings`),
/// seeded through its unix socket with `seeds`; and the client's certificate files.
async fn tls_site(prefix: &str, settings: &[(&str, &str)], seeds: &[&str]) -> (Site, ClientFiles) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    // The server runs as another user when we are root: it must reach its files below this directory.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), &dir.path().join("server"));
    let mut server_settings = pki.server_settings();
    server_settings.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let db = tokio::task::spawn_blocking(move || {
        ScratchPostgres::start(&ScratchOptions { settings: server_settings, ..ScratchOptions::default() })
    })
    .await
    .unwrap()
    .expect("starting a TLS scratch PostgreSQL");
    sql(&db, "postgres", &format!("CREATE DATABASE {DATABASE}")).await;
    for seed in seeds {
        sql(&db, DATABASE, seed).await;
    }
    let key = dr::KeyPair::generate();
    let identity = dir.path().join("identity.txt");
    key.write_identity_file(&identity).unwrap();
    let site = Site {
        config_path: dir.path().join("dr.toml"),
        recipient: key.recipient(),
        identity,
        repo: dir.path().join("repo"),
        db,
        dir,
    };
    write_files(&site.path("site"));
    let client = Pki::client_files(&site.path("pki"));
    (site, client)
}

/// The client side's files.
struct ClientFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ClientFiles {
    /// A conninfo that verifies the server and presents this client's certificate, over TCP.
    fn conninfo(&self, port: u16, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={port} user=postgres dbname={dbname} sslmode=verify-full sslrootcert={} \
             sslcert={} sslkey={}",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Pki {
    fn generate(dir: &Path, server_dir: &Path) -> Pki {
        fs::create_dir_all(dir).unwrap();
        fs::create_dir_all(server_dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=dr test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let signed = |name: &str, subject: &str, extensions: &str| {
            fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    subject,
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    if name == "server" { "2" } else { "3" },
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.crt"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        };
        signed(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        );
        // `cert` authentication maps the certificate's CN to the role.
        signed(
            "client",
            "/CN=postgres",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        fs::set_permissions(dir.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();

        // The server's copies: owned by the user it runs as, the key 0600 (PostgreSQL refuses anything looser).
        for name in ["server.crt", "server.key", "ca.crt"] {
            fs::copy(dir.join(name), server_dir.join(name)).unwrap();
        }
        fs::write(server_dir.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 cert\n").unwrap();
        fs::set_permissions(server_dir.join("server.key"), fs::Permissions::from_mode(0o600)).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            let user = ["postgres", "nobody"]
                .into_iter()
                .find_map(|name| nix::unistd::User::from_name(name).ok().flatten())
                .expect("a user to run PostgreSQL as");
            for entry in fs::read_dir(server_dir).unwrap() {
                nix::unistd::chown(&entry.unwrap().path(), Some(user.uid), Some(user.gid)).unwrap();
            }
            nix::unistd::chown(server_dir, Some(user.uid), Some(user.gid)).unwrap();
        }
        fs::set_permissions(server_dir, fs::Permissions::from_mode(0o700)).unwrap();
        Pki { server_dir: server_dir.to_path_buf() }
    }

    fn client_files(dir: &Path) -> ClientFiles {
        ClientFiles { ca: dir.join("ca.crt"), cert: dir.join("client.crt"), key: dir.join("client.key") }
    }

    /// TLS on 127.0.0.1, client certificates checked against the CA, and `hostssl ... cert` as the only way in
    /// over TCP.
    fn server_settings(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.server_dir.join(name).display().to_string();
        [
            ("listen_addresses", "127.0.0.1".to_string()),
            ("ssl", "on".to_string()),
            ("ssl_cert_file", file("server.crt")),
            ("ssl_key_file", file("server.key")),
            ("ssl_ca_file", file("ca.crt")),
            ("hba_file", file("pg_hba.conf")),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian: apt-get install openssl; postgresql-common depends on it)");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}
