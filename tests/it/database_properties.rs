//! What a database needs around its data to come back whole in a fresh cluster: the roles its objects are
//! owned by and granted to (`[[postgres]] globals`, on by default, also for a backup user that is not a
//! superuser), and the database's own owner, settings and grants (recorded at backup, applied to a database
//! that the restore creates, under whatever name `--into` gives it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::fs;

use common::{DATABASE, Run, Site, query_strings, roles, run, scratch, sql};
use dr::pg::ScratchPostgres;
use serde_json::Value;

/// The site's configuration as a new user writes it from the docs: no `globals` key.
fn without_globals_key(site: &Site) {
    let text = fs::read_to_string(&site.config_path).unwrap();
    assert!(text.contains("globals = true\n"));
    fs::write(&site.config_path, text.replace("globals = true\n", "")).unwrap();
}

/// Who may do what with each table, column and sequence of `dbname`: owners and ACLs, by name.
async fn object_privileges(server: &ScratchPostgres, dbname: &str) -> Vec<String> {
    query_strings(
        server,
        dbname,
        "SELECT n.nspname || '.' || c.relname || ' owner=' || pg_get_userbyid(c.relowner) || ' acl='
                || coalesce(c.relacl::text, 'default')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
         ORDER BY 1",
    )
    .await
}

/// The database's owner, connection limit, comment, grants and settings (its own and its roles' in it).
async fn database_properties(server: &ScratchPostgres, dbname: &str) -> Vec<String> {
    let mut properties = query_strings(
        server,
        "postgres",
        &format!(
            "SELECT 'owner=' || pg_get_userbyid(datdba) || ' limit=' || datconnlimit || ' acl='
                    || coalesce(datacl::text, 'default') || ' comment=' || coalesce(shobj_description(oid, 'pg_database'), '')
             FROM pg_database WHERE datname = '{dbname}'"
        ),
    )
    .await;
    properties.extend(
        query_strings(
            server,
            "postgres",
            &format!(
                "SELECT CASE WHEN s.setrole = 0 THEN 'database' ELSE pg_get_userbyid(s.setrole) END || ': '
                        || s.setconfig::text
                 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                 WHERE d.datname = '{dbname}' ORDER BY 1"
            ),
        )
        .await,
    );
    properties
}

fn restore_into(site: &Site, target: &str, extra: &[&str]) -> Run {
    let into = format!("app={target}");
    site.dr(&[&["restore", "--to", "latest", "--only", "app", "--into", into.as_str()][..], extra].concat())
}

fn drill(site: &Site) -> Value {
    let tmp = tempfile::Builder::new().prefix("dr-props-drill-").tempdir().unwrap();
    let mut command = site.command(&["drill", "--json"]);
    command.env("TMPDIR", tmp.path());
    run(&mut command).ok().json()
}

fn check<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{record:#}"))
}

/// Backs up with the default configuration, restores into a fresh cluster, and drills: the tables' owners
/// and grants to the application's roles must all come back. Returns the drill's record.
async fn default_backup_restores_into_a_fresh_cluster(site: &Site) -> Value {
    let snapshot = site.backup();
    let fresh = scratch().await;
    // Without the roles this fails: role "isntgram_app" does not exist.
    restore_into(site, &fresh.url(DATABASE), &[]).ok();
    let manifest = common::read_manifest(&site.repo, &snapshot);
    let objects: Vec<&str> =
        manifest["sources"][0]["objects"].as_array().unwrap().iter().map(|o| o["role"].as_str().unwrap()).collect();
    assert_eq!(objects, ["pg_dump", "globals"], "the roles are backed up by default");
    let privileges = object_privileges(&site.db, DATABASE).await;
    assert!(
        privileges.iter().any(|p| p.starts_with("public.posts ") && p.contains("isntgram_app=arwd/postgres")),
        "the fixture grants its tables to the app role: {privileges:#?}"
    );
    assert_eq!(object_privileges(&fresh, DATABASE).await, privileges, "owners and grants came back");
    let roles_back = roles(&fresh).await;
    assert!(roles_back.contains_key("isntgram_app") && roles_back.contains_key("isntgram_readonly"), "{roles_back:?}");

    let record = drill(site);
    assert_eq!(record["passed"], true, "{record:#}");
    assert_eq!(check(&record, "roles app")["status"], "pass", "{record:#}");
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_backup_carries_the_roles_so_a_fresh_cluster_gets_the_grants_and_the_drill_passes() {
    let site = Site::new().await;
    without_globals_key(&site);
    default_backup_restores_into_a_fresh_cluster(&site).await;
    // With passwords: the backup user is a superuser.
    let fresh = scratch().await;
    restore_into(&site, &fresh.url(DATABASE), &["--jobs", "2"]).ok();
    assert_eq!(roles(&fresh).await, roles(&site.db).await, "roles with their password hashes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_user_that_is_not_a_superuser_still_backs_up_the_roles_without_passwords() {
    let site = Site::new().await;
    // A login role that may read every table, sequence and large object, but not pg_authid's password hashes
    // (pg_read_all_data would read those too).
    sql(&site.db, "postgres", "CREATE ROLE dr_backup LOGIN").await;
    sql(
        &site.db,
        DATABASE,
        "GRANT USAGE ON SCHEMA public, analytics TO dr_backup;
         GRANT SELECT ON ALL TABLES IN SCHEMA public, analytics TO dr_backup;
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, analytics TO dr_backup;
         DO $$DECLARE o oid; BEGIN
           FOR o IN SELECT oid FROM pg_largeobject_metadata LOOP
             EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO dr_backup', o);
           END LOOP;
         END$$",
    )
    .await;
    without_globals_key(&site);
    let text = fs::read_to_string(&site.config_path).unwrap();
    assert!(text.contains("user=postgres "));
    fs::write(&site.config_path, text.replace("user=postgres ", "user=dr_backup ")).unwrap();

    let backup = site.dr(&["backup", "--json"]).ok().json();
    let warnings = backup["sources"][0]["warnings"].to_string();
    assert!(warnings.contains("cannot read password hashes") && warnings.contains("--no-role-passwords"), "{backup:#}");

    let record = default_backup_restores_into_a_fresh_cluster(&site).await;
    let roles_check = check(&record, "roles app")["detail"].as_str().unwrap();
    assert!(roles_check.contains("without password hashes"), "{roles_check}");
}

/// The source database gets an owner, settings, a comment, a connection limit and grants that differ from
/// what a CREATE DATABASE gives.
async fn give_the_database_properties(site: &Site) {
    sql(
        &site.db,
        "postgres",
        &format!(
            r#"CREATE ROLE shopapp LOGIN;
               CREATE ROLE reporting NOLOGIN;
               ALTER DATABASE {DATABASE} OWNER TO shopapp;
               ALTER DATABASE {DATABASE} SET work_mem = '64MB';
               ALTER DATABASE {DATABASE} SET search_path = app, public, "$user";
               ALTER ROLE reporting IN DATABASE {DATABASE} SET statement_timeout = '5s';
               ALTER DATABASE {DATABASE} CONNECTION LIMIT 50;
               COMMENT ON DATABASE {DATABASE} IS 'the site''s data';
               REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;
               GRANT CONNECT ON DATABASE {DATABASE} TO reporting;"#
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_owner_settings_and_grants_come_back_also_under_another_name() {
    let site = Site::new().await;
    give_the_database_properties(&site).await;
    let original = database_properties(&site.db, DATABASE).await;
    assert!(original[0].starts_with("owner=shopapp limit=50 acl={shopapp=CTc/shopapp,reporting=c/shopapp}"));
    assert_eq!(original.len(), 3, "{original:#?}");
    site.backup();

    // A fresh cluster, streamed: the roles come from the globals, the rest from the snapshot.
    let fresh = scratch().await;
    let run = restore_into(&site, &fresh.url(DATABASE), &["--json"]).ok().json();
    assert_eq!(run["sources"][0]["database_properties"]["owner"], "shopapp", "{run:#}");
    assert_eq!(run["sources"][0]["warnings"], serde_json::json!([]), "{run:#}");
    assert_eq!(database_properties(&fresh, DATABASE).await, original);
    let searched = query_strings(&fresh, DATABASE, "SELECT current_setting('search_path')").await;
    assert_eq!(searched, [r#"app, public, "$user""#], "a list setting keeps its elements");

    // Under another name (as drills do), from a staged archive.
    restore_into(&site, &fresh.url("shop_copy"), &["--jobs", "2"]).ok();
    assert_eq!(database_properties(&fresh, "shop_copy").await, original);

    // A database that existed keeps its own properties, and the restore says whose it was.
    sql(&fresh, "postgres", &format!("ALTER DATABASE {DATABASE} OWNER TO postgres")).await;
    let forced = restore_into(&site, &fresh.url(DATABASE), &["--force"]).ok();
    assert!(forced.stdout.contains(r#"keeps its owner "postgres""#), "{}", forced.stdout);
    assert!(database_properties(&fresh, DATABASE).await[0].starts_with("owner=postgres "));

    // The drill checks the owner too.
    let record = drill(&site);
    assert_eq!(record["passed"], true, "{record:#}");
    let roles_check = check(&record, "roles app");
    assert_eq!(roles_check["status"], "pass", "{record:#}");
    assert!(roles_check["detail"].as_str().unwrap().contains("the database is owned by shopapp"), "{record:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_that_do_not_exist_are_skipped_with_a_warning_and_the_restore_succeeds() {
    let site = Site::new().await;
    give_the_database_properties(&site).await;
    // No globals: the target has the tables' roles (created by hand) but not the database's.
    let text = fs::read_to_string(&site.config_path).unwrap();
    fs::write(&site.config_path, text.replace("globals = true\n", "globals = false\n")).unwrap();
    site.backup();
    let fresh = scratch().await;
    sql(&fresh, "postgres", "CREATE ROLE isntgram_app; CREATE ROLE isntgram_readonly").await;

    let run = restore_into(&site, &fresh.url(DATABASE), &[]).ok();
    for expected in [
        r#"warning: role "shopapp" does not exist on the target: not applied: owner, grant of CREATE, TEMPORARY, CONNECT"#,
        r#"warning: role "reporting" does not exist on the target: not applied: setting statement_timeout, grant of CONNECT"#,
    ] {
        assert!(run.stdout.contains(expected), "{expected}\n{}", run.stdout);
    }
    let properties = database_properties(&fresh, DATABASE).await;
    assert_eq!(properties[0], "owner=postgres limit=50 acl={postgres=CTc/postgres} comment=the site's data");
    assert_eq!(properties[1..], [r#"database: {work_mem=64MB,"search_path=app, public, \"$user\""}"#]);
}
