//! Content fingerprints of a database, to prove a restore gave back what was backed up.
//!
//! Each table's digest is an md5 over its rows as text, in a fixed order, so two databases with equal
//! digests hold equal rows. Sequences and large objects are fingerprinted too: both are easy to lose.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::dump::quote_ident;

/// `schema.table` (or `sequence schema.name`, `large objects`) → "rows:digest".
pub type Fingerprint = BTreeMap<String, String>;

pub async fn fingerprint(client: &Client) -> Result<Fingerprint, tokio_postgres::Error> {
    let mut out = BTreeMap::new();
    let tables = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'S')
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
             ORDER BY 1, 2",
            &[],
        )
        .await?;
    for row in tables {
        let (schema, name, kind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
        if kind == "S" {
            let row = client
                .query_one(&format!("SELECT last_value::text || '/' || is_called::text FROM {qualified}"), &[])
                .await?;
            out.insert(format!("sequence {schema}.{name}"), row.get::<_, String>(0));
        } else {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')
                         FROM {qualified} t"
                    ),
                    &[],
                )
                .await?;
            out.insert(format!("{schema}.{name}"), row.get::<_, String>(0));
        }
    }
    let row = client
        .query_one(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid)), '')
             FROM pg_largeobject_metadata",
            &[],
        )
        .await?;
    out.insert("large objects".to_string(), row.get::<_, String>(0));
    Ok(out)
}
