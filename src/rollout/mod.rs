//! Progressive delivery: canary and blue-green rollouts that judge the canary
//! against the stable version from switchyard's own metrics, and promote or
//! roll back on their own.
//!
//! ```text
//! start ─> smoke gate (canary backends answer the smoke path; optional webhook 2xx)
//!       ─> for each step p < 100: (approval first if the plan asks for one)
//!            weights canary=p stable=100-p; wait the step's duration,
//!            sampling canary and stable over the same window; judge it together
//!            with the counts of the rollout's earlier steps (pooled):
//!              too few requests -> extend the window (12 windows, then a failure)
//!              undecided -> extend (at 24 looks: hold, waiting for approval)
//!              significantly worse (5xx, latency, gates) -> failure
//!              failures == failure_limit -> roll back
//!       ─> step 100: canary=100 stable=0, then a watch window: the canary's pooled
//!            counts against the stable's from the earlier steps (a blue-green
//!            switch: its record up to the switch); pass -> promoted, fail -> roll back
//! any time: canary without an available backend -> roll back at once
//! ```
//!
//! | file | layer | owns |
//! |---|---|---|
//! | [`plan`] | pure | plans from defaults, presets and a request |
//! | [`judge`] | pure | the decision rule |
//! | [`gate`] | service | the smoke gate: probes and the webhook |
//! | [`run`] | service | one task per active rollout, and their supervisor |
//!
//! The record itself ([`crate::model::rollout::Rollout`]) lives in the state
//! and changes only through [`crate::control::Control`]'s revisioned writes
//! (which also set weights in the same write), so a restart resumes the step
//! instead of forgetting it, and an operator's pause or abort is never lost
//! to a judgement. Every step, judgement, promotion and rollback is an audit
//! event.

pub mod gate;
pub mod judge;
pub mod plan;
pub mod run;

pub use judge::{MAX_LOOKS, MAX_WAITS};
