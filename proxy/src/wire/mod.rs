//! The PostgreSQL wire-protocol front door (pgwire + datafusion-postgres), one
//! module per sub-protocol: startup/auth, TLS, queries, cancel, errors.

pub mod auth;
pub mod cancel;
pub mod catalog;
pub mod catalog_facts;
pub mod catalog_sql;
pub mod column_names;
pub mod column_type;
pub mod copy;
pub mod encode;
pub mod errors;
pub mod functions;
pub mod guard;
pub mod information_schema;
pub mod params;
pub mod running;
pub mod session;
pub mod tls;
pub mod transactions;
