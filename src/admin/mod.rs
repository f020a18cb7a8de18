//! The API layer: the admin API (HTTP/1.1 + JSON) on a Unix socket (mode
//! 0600), and the dashboard, which serves the same API over loopback TCP
//! behind a token.
//!
//! ```text
//! UnixStream (peer uid) ─> hyper http1 ─> AdminCommand::parse(method, path, query, body)
//!                                      ─> dispatch (blocking pool) ─> Control ─> typed reply ─> JSON
//! ```
//!
//! | file | owns |
//! |---|---|
//! | [`command`] | parsing a request into an [`AdminCommand`] (pure, fuzzed) |
//! | [`dispatch`] | running a command against the control layer; typed replies |
//! | [`socket`] | binding and serving the Unix socket |
//! | [`dashboard`] | the web page and the API over TCP behind a token |
//!
//! Every refusal is `{"error": "..."}` with the status of its
//! [`AdminError`](crate::model::AdminError) variant.

pub mod command;
pub mod dashboard;
pub mod dispatch;
pub mod socket;

pub use command::{AdminCommand, MAX_BODY};
pub use dispatch::{dispatch, handle_request, json_response, Api, Reply};
