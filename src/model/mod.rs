//! Typed models shared by every layer above: the admin API's requests and
//! answers (the JSON on the wire), audit event kinds, and the typed errors a
//! change can end in. Pure: serde types and their rules, no I/O, no tokio.
//!
//! `control` returns these, `admin` serializes them, `ctl` and the dashboard's
//! server side read them back, so renaming a field is a compile error in every
//! place that uses it, not a silent break.

pub mod api;
pub mod error;
pub mod event;
pub mod rollout;

pub use error::AdminError;
pub use event::{Event, EventKind, NewEvent};
