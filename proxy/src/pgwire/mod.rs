//! The PostgreSQL wire-protocol front door (pgwire + datafusion-postgres):
//! [`protocol`] speaks pgwire over the engine, [`pgcompat`] makes DataFusion look
//! like PostgreSQL to the clients' catalog queries.

pub mod pgcompat;
pub mod protocol;
