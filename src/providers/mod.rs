//! Discovery providers: pools, versions and backends from somewhere other
//! than the config file. One today: Docker (`[providers.docker]`).
//!
//! | file | owns | layer |
//! | --- | --- | --- |
//! | `labels.rs` | a container's labels (switchyard's or Traefik's) to pools, versions, addresses | pure |
//! | `rule.rs` | Traefik's router rules to hosts (shared with `switchyard import traefik`) | pure |
//! | `docker.rs` | the Engine API: list + events, reconnects with backoff, resyncs | service |
//!
//! A provider is a source of changes like the admin API: it hands what it
//! found to [`crate::control::Control`], which persists, audits, builds and
//! swaps the table. It never touches the table itself.

pub mod docker;
pub mod labels;
pub mod rule;
