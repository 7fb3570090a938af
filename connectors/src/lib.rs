//! Origins: how Switchyard reaches PostgreSQL databases, MongoDB databases, SQLite
//! files, folders of files and its own local store, and how their tables appear in the planner's catalog.
//!
//! Every origin kind implements one trait, [`Origin`] (a folder or file each:
//! [`postgres`], [`mongo`], [`sqlite`], [`files`], [`local`]); what the SQL origins
//! share is in [`sql`]. Tables are resolved lazily ([`catalog::OriginSchema`]): an
//! origin that is down fails only the statements that read it, and the next
//! statement tries again.

pub mod catalog;
pub mod changes;
pub mod columns;
mod error;
pub mod facts;
pub mod files;
pub mod local;
pub mod mongo;
pub mod native;
pub mod origin;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod write;

pub use catalog::{install, CopyNotes, Origins};
pub use columns::{PG_TYPE_KEY, PG_TYPMOD_KEY};
pub use error::{ConnectorError, Result};
pub use origin::Origin;
