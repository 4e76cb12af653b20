//! The database's own properties: its owner, connection limit, comment, settings (`ALTER DATABASE ... SET`,
//! `ALTER ROLE ... IN DATABASE ... SET`) and grants. Since PostgreSQL 11 a pg_dump archive made without
//! `--create` (dr's) holds none of them, so without this a database restored into a fresh cluster comes back
//! owned by whoever restored it, with default grants and none of its settings.
//!
//! They are read at backup time inside the exported snapshot, so they describe the dumped database, and kept
//! in the encrypted private manifest rather than taken from the archive: a restore applies them without
//! reading the archive twice (a streamed restore reads it once, from the store), and under whatever name
//! `--into` gives the database. The statements are the ones `pg_restore --create` would run, aimed at the
//! target's name. Roles that do not exist on the target are skipped with a warning; a statement that fails
//! (not allowed for a non-superuser, say) is a warning too: the data is back, and that is what counts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio_postgres::Client;

use super::connect::describe;
use super::dump::{quote_ident, quote_literal};
use crate::repo::manifest::{DatabaseGrant, DatabaseProperties, DatabaseSetting};

/// Reads the current database's properties (inside the caller's transaction, so in its snapshot).
pub async fn read(client: &Client) -> Result<DatabaseProperties, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, shobj_description(d.oid, 'pg_database'),
                    d.datacl IS NULL
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await?;
    let default_privileges: bool = row.get(3);
    let grants = if default_privileges {
        None
    } else {
        let rows = client
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END,
                        a.privilege_type, a.is_grantable
                 FROM pg_database d,
                      aclexplode(d.datacl) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, n)
                 WHERE d.datname = current_database()
                 ORDER BY a.n",
                &[],
            )
            .await?;
        Some(
            rows.iter()
                .map(|r| DatabaseGrant { grantee: r.get(0), privilege: r.get(1), grantable: r.get(2) })
                .collect(),
        )
    };
    let rows = client
        .query(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole)::text END, c.setting
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                  unnest(s.setconfig) WITH ORDINALITY AS c(setting, n)
             WHERE d.datname = current_database()
             ORDER BY s.setrole <> 0, 1, c.n",
            &[],
        )
        .await?;
    let settings = rows
        .iter()
        .filter_map(|r| {
            let setting: String = r.get(1);
            let (name, value) = setting.split_once('=')?;
            Some(DatabaseSetting { role: r.get(0), name: name.to_string(), value: value.to_string() })
        })
        .collect();
    Ok(DatabaseProperties { owner: row.get(0), connection_limit: row.get(1), comment: row.get(2), grants, settings })
}

/// What applying the properties did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PropertiesOutcome {
    /// The database's owner afterwards: the recorded one, unless its role does not exist here or the change
    /// failed.
    pub owner: Option<String>,
    pub statements_applied: usize,
    /// One line per role that does not exist on the target, naming what was skipped for it.
    pub skipped: Vec<String>,
    /// `statement: error` for each statement that failed.
    pub failures: Vec<String>,
}

/// The statements that give `database` its recorded properties, and per missing role what they leave out.
#[derive(Debug, Default, PartialEq, Eq)]
struct PropertiesPlan {
    statements: Vec<String>,
    /// Role -> what was not applied because the role does not exist.
    skipped: BTreeMap<String, Vec<String>>,
}

impl PropertiesPlan {
    fn skip(&mut self, role: &str, what: String) {
        self.skipped.entry(role.to_string()).or_default().push(what);
    }

    fn skipped_lines(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|(role, what)| format!("role {role:?} does not exist on the target: not applied: {}", what.join(", ")))
            .collect()
    }
}

/// Applies `properties` to `database`, from a connection to any database of the same server.
pub async fn apply(
    client: &Client,
    database: &str,
    properties: &DatabaseProperties,
) -> Result<PropertiesOutcome, tokio_postgres::Error> {
    let existing: BTreeSet<String> =
        client.query("SELECT rolname::text FROM pg_roles", &[]).await?.iter().map(|r| r.get(0)).collect();
    let plan = plan(properties, database, &existing);
    let mut outcome = PropertiesOutcome { skipped: plan.skipped_lines(), ..PropertiesOutcome::default() };
    for statement in &plan.statements {
        match client.batch_execute(statement).await {
            Ok(()) => outcome.statements_applied += 1,
            Err(e) => outcome.failures.push(format!("{}: {}", summarize(statement), describe(&e))),
        }
    }
    outcome.owner = owner_of(client, database).await?;
    Ok(outcome)
}

/// The owner of `database` on the connection's server (`None`: no such database).
pub async fn owner_of(client: &Client, database: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt("SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1", &[&database])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

fn plan(properties: &DatabaseProperties, database: &str, roles: &BTreeSet<String>) -> PropertiesPlan {
    let db = quote_ident(database);
    let mut plan = PropertiesPlan::default();
    let owner_exists = roles.contains(&properties.owner);
    if owner_exists {
        plan.statements.push(format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(&properties.owner)));
    } else {
        plan.skip(&properties.owner, "owner".into());
    }
    if properties.connection_limit != -1 {
        plan.statements.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {}", properties.connection_limit));
    }
    if let Some(comment) = &properties.comment {
        plan.statements.push(format!("COMMENT ON DATABASE {db} IS {}", quote_literal(comment)));
    }
    for setting in &properties.settings {
        let assignment = format!("SET {} TO {}", quote_ident(&setting.name), setting_value(setting));
        match &setting.role {
            None => plan.statements.push(format!("ALTER DATABASE {db} {assignment}")),
            Some(role) if roles.contains(role) => {
                plan.statements.push(format!("ALTER ROLE {} IN DATABASE {db} {assignment}", quote_ident(role)));
            }
            Some(role) => plan.skip(role, format!("setting {}", setting.name)),
        }
    }
    if let Some(grants) = &properties.grants {
        // From the defaults (PUBLIC: CONNECT, TEMPORARY; the owner: all) to exactly the recorded list. The
        // owner's implicit privileges are only touched when the database is really theirs: otherwise the
        // restoring user would revoke its own.
        plan.statements.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        if owner_exists {
            plan.statements.push(format!("REVOKE ALL ON DATABASE {db} FROM {}", quote_ident(&properties.owner)));
        }
        for (grantee, grantable, privileges) in group_grants(grants) {
            let known: Vec<&str> = privileges.iter().copied().filter(|p| is_database_privilege(p)).collect();
            if known.is_empty() {
                continue;
            }
            let to = match grantee {
                None => "PUBLIC".to_string(),
                Some(role) if roles.contains(role) => quote_ident(role),
                Some(role) => {
                    plan.skip(role, format!("grant of {}", known.join(", ")));
                    continue;
                }
            };
            let option = if grantable { " WITH GRANT OPTION" } else { "" };
            plan.statements.push(format!("GRANT {} ON DATABASE {db} TO {to}{option}", known.join(", ")));
        }
    }
    plan
}

/// Grants of one grantee with one grant option, merged, in the order of their first appearance.
fn group_grants(grants: &[DatabaseGrant]) -> Vec<(Option<&String>, bool, Vec<&str>)> {
    let mut groups: Vec<(Option<&String>, bool, Vec<&str>)> = Vec::new();
    for grant in grants {
        let key = (grant.grantee.as_ref(), grant.grantable);
        match groups.iter_mut().find(|(grantee, grantable, _)| (*grantee, *grantable) == key) {
            Some(group) => group.2.push(&grant.privilege),
            None => groups.push((key.0, key.1, vec![&grant.privilege])),
        }
    }
    groups
}

/// The privileges a database has; anything else in a manifest is never put into SQL.
fn is_database_privilege(privilege: &str) -> bool {
    matches!(privilege, "CREATE" | "TEMPORARY" | "CONNECT")
}

/// The right-hand side of `SET name TO ...` for a stored value, as pg_dump writes it: the elements of a list
/// setting whose elements PostgreSQL quotes (`search_path`, ...) each as a literal, anything else as one.
fn setting_value(setting: &DatabaseSetting) -> String {
    // pg_dump's variable_is_guc_list_quote().
    const LIST_QUOTE: [&str; 6] = [
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    ];
    if LIST_QUOTE.iter().any(|name| name.eq_ignore_ascii_case(&setting.name))
        && let Some(elements) = split_guc_list(&setting.value)
    {
        if elements.is_empty() {
            return "''".to_string();
        }
        return elements.iter().map(|e| quote_literal(e)).collect::<Vec<_>>().join(", ");
    }
    quote_literal(&setting.value)
}

/// Splits a stored list setting (`app, public, "$user"`) into its elements, unquoted, like PostgreSQL's
/// SplitGUCList; `None` when it is not well formed.
fn split_guc_list(value: &str) -> Option<Vec<String>> {
    let mut elements = Vec::new();
    let mut chars = value.trim_start().chars().peekable();
    if chars.peek().is_none() {
        return Some(elements);
    }
    loop {
        let mut element = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        element.push('"');
                    }
                    '"' => break,
                    c => element.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                element.push(c);
                chars.next();
            }
            if element.is_empty() {
                return None;
            }
        }
        elements.push(element);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(elements),
            Some(',') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
}

/// The statement shortened for a message (a comment can be long).
fn summarize(statement: &str) -> String {
    if statement.chars().count() > 120 {
        format!("{}...", statement.chars().take(117).collect::<String>())
    } else {
        statement.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(role: Option<&str>, name: &str, value: &str) -> DatabaseSetting {
        DatabaseSetting { role: role.map(String::from), name: name.into(), value: value.into() }
    }

    fn grant(grantee: Option<&str>, privilege: &str, grantable: bool) -> DatabaseGrant {
        DatabaseGrant { grantee: grantee.map(String::from), privilege: privilege.into(), grantable }
    }

    fn shop() -> DatabaseProperties {
        DatabaseProperties {
            owner: "shopapp".into(),
            connection_limit: 50,
            comment: Some("the shop's data".into()),
            grants: Some(vec![
                grant(Some("shopapp"), "CREATE", false),
                grant(Some("shopapp"), "TEMPORARY", false),
                grant(Some("shopapp"), "CONNECT", false),
                grant(Some("reporting"), "CONNECT", false),
                grant(Some("auditor"), "CONNECT", true),
            ]),
            settings: vec![
                setting(None, "work_mem", "64MB"),
                setting(None, "search_path", "app, public, \"$user\""),
                setting(Some("reporting"), "statement_timeout", "5s"),
                setting(Some("gone"), "work_mem", "1MB"),
            ],
        }
    }

    fn roles(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_statements_are_pg_dump_create_s_aimed_at_the_target_name() {
        let plan = plan(&shop(), "shop_copy", &roles(&["shopapp", "reporting", "postgres"]));
        assert_eq!(
            plan.statements,
            [
                r#"ALTER DATABASE "shop_copy" OWNER TO "shopapp""#,
                r#"ALTER DATABASE "shop_copy" CONNECTION LIMIT 50"#,
                r#"COMMENT ON DATABASE "shop_copy" IS 'the shop''s data'"#,
                r#"ALTER DATABASE "shop_copy" SET "work_mem" TO '64MB'"#,
                r#"ALTER DATABASE "shop_copy" SET "search_path" TO 'app', 'public', '$user'"#,
                r#"ALTER ROLE "reporting" IN DATABASE "shop_copy" SET "statement_timeout" TO '5s'"#,
                r#"REVOKE ALL ON DATABASE "shop_copy" FROM PUBLIC"#,
                r#"REVOKE ALL ON DATABASE "shop_copy" FROM "shopapp""#,
                r#"GRANT CREATE, TEMPORARY, CONNECT ON DATABASE "shop_copy" TO "shopapp""#,
                r#"GRANT CONNECT ON DATABASE "shop_copy" TO "reporting""#,
            ]
        );
        assert_eq!(
            plan.skipped_lines(),
            [
                r#"role "auditor" does not exist on the target: not applied: grant of CONNECT"#,
                r#"role "gone" does not exist on the target: not applied: setting work_mem"#,
            ]
        );
    }

    #[test]
    fn a_missing_owner_keeps_the_restoring_user_s_own_privileges() {
        let plan = plan(&shop(), "shop", &roles(&["reporting"]));
        assert!(plan.statements.iter().all(|s| !s.contains("shopapp")), "{:#?}", plan.statements);
        assert!(plan.statements.contains(&r#"REVOKE ALL ON DATABASE "shop" FROM PUBLIC"#.to_string()));
        assert_eq!(
            plan.skipped_lines()[2],
            r#"role "shopapp" does not exist on the target: not applied: owner, grant of CREATE, TEMPORARY, CONNECT"#
        );
    }

    #[test]
    fn default_privileges_and_no_settings_mean_only_the_owner() {
        let properties = DatabaseProperties {
            owner: "app".into(),
            connection_limit: -1,
            comment: None,
            grants: None,
            settings: Vec::new(),
        };
        let plan = plan(&properties, "app", &roles(&["app"]));
        assert_eq!(plan.statements, [r#"ALTER DATABASE "app" OWNER TO "app""#]);
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn public_grants_and_grant_options_are_kept_apart() {
        let properties = DatabaseProperties {
            grants: Some(vec![
                grant(None, "CONNECT", false),
                grant(Some("app"), "CONNECT", true),
                grant(Some("app"), "CREATE", false),
                grant(Some("app"), "DROP TABLE users; --", false),
            ]),
            ..shop()
        };
        let plan = plan(&properties, "db", &roles(&["app", "shopapp"]));
        let grants: Vec<&String> = plan.statements.iter().filter(|s| s.starts_with("GRANT")).collect();
        assert_eq!(
            grants,
            [
                r#"GRANT CONNECT ON DATABASE "db" TO PUBLIC"#,
                r#"GRANT CONNECT ON DATABASE "db" TO "app" WITH GRANT OPTION"#,
                r#"GRANT CREATE ON DATABASE "db" TO "app""#,
            ]
        );
    }

    #[test]
    fn list_settings_are_split_like_postgresql_does() {
        assert_eq!(split_guc_list(r#"app, public, "$user""#).unwrap(), ["app", "public", "$user"]);
        assert_eq!(split_guc_list(r#""we""ird, one",x"#).unwrap(), ["we\"ird, one", "x"]);
        assert_eq!(split_guc_list("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_guc_list(r#""""#).unwrap(), [""]);
        assert_eq!(split_guc_list(r#""open"#), None);
        assert_eq!(split_guc_list("a,,b"), None);
        assert_eq!(setting_value(&setting(None, "search_path", r#""""#)), "''");
        assert_eq!(setting_value(&setting(None, "DateStyle", "ISO, MDY")), "'ISO, MDY'");
        assert_eq!(setting_value(&setting(None, "search_path", r#""open"#)), r#"'"open'"#);
    }
}
