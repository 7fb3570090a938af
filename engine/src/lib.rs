//! The statement lifecycle every front door shares.
//!
//! A door authenticates a user and calls [`Engine::login`], which fixes the
//! [`Session`]'s principal. Each statement is then [`Session::check`]ed (planned,
//! passed through the safety pipeline, refusals audited), [`Session::begin`]s a run
//! (audit record, concurrency slot) and [`Running::execute`]s: the rows come back
//! as a guarded Arrow stream ([`guard`]: timeout, row cap, result bytes, cancel,
//! the audit record when it ends). Errors are [`EngineError`]s with one SQLSTATE
//! each, from the vocabulary in `switchyard-sqlstate`; the door only encodes.

pub mod audit;
mod error;
pub mod guard;
pub mod refresh;
mod session;
pub mod slots;
pub mod text;
pub mod transaction;
pub mod write;

pub use error::{classify, EngineError, Result};
pub use session::{
    passes_through, Allowed, Approval, Client, Engine, Output, Protocol, Rows, RunOptions, Running,
    Session, Verdict,
};
pub use switchyard_sqlstate::{CodedError, SqlState};
pub use text::{QueryText, TextFacts};
