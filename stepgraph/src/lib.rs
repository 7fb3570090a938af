//! Federated step graphs, as faz defines them: one request is a list of native
//! steps (each against one origin), a DAG by `depends_on`, values carried from a
//! step to the next by `link_from`/`link_to`, and a read-only merge statement
//! over the steps' results.
//!
//! Every door (REST, MCP) hands a request body to [`StepGraph::query`] and gets
//! back faz's envelope. Each step passes the same safety pipeline as a pgwire
//! statement (with PROMPT_GUARD first), is planned and run by the engine from its
//! checked plan, and the request leaves one audit record.
//!
//! - [`request`]: the JSON → a validated [`Graph`] (faz's messages).
//! - [`resolve`]: an origin's table names → the datasets that expose them.
//! - [`sql`]: SQL steps: check, link filter on the declared table's scan, run.
//! - [`mql`]: MQL steps: checked on the parsed JSON, run natively at MongoDB.
//! - [`merge`]: the steps' results as tables of a context of their own.
//! - [`run`]: the request's life: guard, check, strip/block, schedule, merge, audit.
//! - [`scratchpad`]: results over the row cap, kept for pages (spilled to disk).
//! - [`envelope`]: the response and Arrow values as JSON.

pub mod envelope;
mod error;
pub mod merge;
pub mod mql;
pub mod request;
pub mod resolve;
pub mod run;
pub mod scratchpad;
pub mod sql;

pub use error::{kind_of, Kind, Result, StepError};
pub use request::{Graph, Language, Link, Query, Step};
pub use run::{Answer, Door, StepGraph};
