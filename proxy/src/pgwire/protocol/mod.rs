//! The PostgreSQL wire protocol, one module per sub-protocol, each a thin adapter
//! over the engine: messages become [`switchyard_engine::Session`] calls and Arrow
//! batches become DataRows.

pub mod auth;
pub mod cancel;
pub mod connection;
pub mod copy;
pub mod copy_in;
pub mod cursor;
pub mod encode;
pub mod errors;
pub mod extended;
pub mod params;
pub mod query;
pub mod settings;
pub mod simple;
pub mod statements;
pub mod tls;
pub mod transactions;
