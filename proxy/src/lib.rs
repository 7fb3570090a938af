//! Switchyard's front doors and the `switchyard` binary's building blocks.
//!
//! Data flows one way: a front door ([`pgwire`], or [`http`] for step graphs)
//! → engine (plan, safety, run) → connectors → origins; Arrow batches flow back.

pub mod demo;
pub mod http;
pub mod mcp;
pub mod pgwire;
pub mod server;

pub use server::{start, Server, StartError};
