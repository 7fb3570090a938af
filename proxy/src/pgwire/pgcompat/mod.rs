//! PostgreSQL compatibility for pgwire clients: the catalogs they read (pg_catalog,
//! information_schema, by the user's grants), the functions they call, and the SQL
//! text rewrites datafusion-postgres's parser and DataFusion's planner need.

pub mod catalog;
pub mod catalog_facts;
pub mod catalog_sql;
pub mod column_names;
pub mod column_type;
pub mod functions;
pub mod guard;
pub mod information_schema;
