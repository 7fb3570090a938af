//! The catalog facts of a PostgreSQL origin table, from the origin's own pg_catalog
//! (three small queries on the origin's pool). Expression and partial indexes are
//! left out: their definitions would name origin objects and columns we cannot check.

use std::sync::Arc;

use datafusion::common::TableReference;

use super::pool::PgPool;
use crate::facts::{
    ColumnFacts, Constraint, ConstraintKind, ForeignKey, Index, Resolve, TableFacts,
};
use crate::sql::quoted;
use crate::Result;

const COLUMNS: &str = "\
SELECT a.attname::text, a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid)
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

const CONSTRAINTS: &str = "\
SELECT c.conname::text, c.contype::text,
  ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o),
  fn.nspname::text, fc.relname::text,
  ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o),
  c.confupdtype::text, c.confdeltype::text, c.confmatchtype::text,
  c.condeferrable, c.condeferred, ic.relname::text,
  CASE WHEN c.contype = 'c' THEN pg_catalog.pg_get_constraintdef(c.oid) END
FROM pg_catalog.pg_constraint c
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = c.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
LEFT JOIN pg_catalog.pg_class ic ON ic.oid = c.conindid
WHERE c.conrelid = $1::text::regclass AND c.contype IN ('p', 'u', 'f', 'c')
ORDER BY c.conname";

const INDEXES: &str = "\
SELECT ic.relname::text, i.indisunique, i.indisprimary, am.amname::text,
  ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
  i.indnkeyatts::int4,
  0 = ANY (i.indkey::int2[]) OR i.indpred IS NOT NULL OR i.indexprs IS NOT NULL
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
WHERE i.indrelid = $1::text::regclass
ORDER BY ic.relname";

fn flag(s: Option<String>) -> char {
    s.and_then(|s| s.chars().next()).unwrap_or(' ')
}

/// Reads the facts of `table` from its origin; foreign keys to tables no dataset
/// exposes (per `resolve`) are left out.
pub async fn fetch(
    pool: &Arc<PgPool>,
    table: &TableReference,
    resolve: Resolve<'_>,
) -> Result<TableFacts> {
    let name = quoted(table);
    let mut facts = TableFacts::default();
    for row in pool.query(COLUMNS, &name).await? {
        facts.columns.push(ColumnFacts {
            name: row.get(0),
            not_null: row.get(1),
            default: row.get(2),
        });
    }
    for row in pool.query(CONSTRAINTS, &name).await? {
        let contype: String = row.get(1);
        let kind = match contype.as_str() {
            "p" => ConstraintKind::PrimaryKey,
            "u" => ConstraintKind::Unique,
            "c" => ConstraintKind::Check(row.get::<_, Option<String>>(12).unwrap_or_default()),
            _ => {
                let (Some(schema), Some(rel)) = (
                    row.get::<_, Option<String>>(3),
                    row.get::<_, Option<String>>(4),
                ) else {
                    continue;
                };
                let Some((schema, table)) = resolve(&schema, &rel) else {
                    tracing::debug!(origin = %pool.origin(), %schema, %rel, "foreign key to a table no dataset exposes");
                    continue;
                };
                ConstraintKind::ForeignKey(ForeignKey {
                    schema,
                    table,
                    columns: row.get(5),
                    on_update: flag(row.get(6)),
                    on_delete: flag(row.get(7)),
                    match_type: flag(row.get(8)),
                })
            }
        };
        facts.constraints.push(Constraint {
            name: row.get(0),
            kind,
            columns: row.get(2),
            index: row.get(11),
            deferrable: row.get(9),
            deferred: row.get(10),
        });
    }
    for row in pool.query(INDEXES, &name).await? {
        if row.get::<_, bool>(6) {
            continue;
        }
        let mut columns: Vec<String> = row.get(4);
        let keys = usize::try_from(row.get::<_, i32>(5))
            .unwrap_or(0)
            .min(columns.len());
        let include = columns.split_off(keys);
        facts.indexes.push(Index {
            name: row.get(0),
            unique: row.get(1),
            primary: row.get(2),
            method: row.get(3),
            columns,
            include,
        });
    }
    Ok(facts)
}
