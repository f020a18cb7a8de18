//! switchyard: a reverse proxy for blue-green and canary releases on small hosts.
//!
//! Requests are routed by Host to a pool whose versions share traffic by
//! weight. Every routing decision reads one immutable [`routing::RoutingTable`]
//! held in an `ArcSwap`; every change builds a new table and swaps it in, so a
//! weight change or a rollback takes effect on the very next request.
//!
//! # Layers
//!
//! A module imports only from its own layer's lower rows or from layers
//! below it (`tests/layers.rs` checks every `crate::` path against this map).
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | pure | [`config`], [`host`], [`rules`], [`balance`], [`model`], [`state`] (model, with [`state::discovered`]), [`metrics::window`], [`rollout::plan`], [`rollout::judge`], [`health::counter`], [`notify::message`], [`fsutil`], [`providers::labels`], [`providers::rule`] | the file model and validation, host names, route and version rules, the weighted schedule, API models and typed errors, the persisted state and how it applies (discovered pools too), container labels to pools and Traefik's router rules, window maths, rollout plans and the judge, rise/fall counters, notification bodies, durable writes |
//! | live state | [`metrics`], [`upstream`] (with [`upstream::h1`] and [`upstream::probe`]), [`routing`], [`events`], [`state::store`], [`tls`], [`accesslog`], [`listener`], [`middleware`], [`cluster`] | Prometheus series, backends and pooled connections, the routing table, the audit log, the state store, certificates, the access log writer, the listener helper, the compiled middlewares, the etcd client and the fleet's view |
//! | control | [`control`] | the one type that owns every change; typed results and errors |
//! | services | [`proxy`], [`health`], [`rollout::run`], [`rollout::gate`], [`acme`], [`stats`], [`notify`], [`providers`] (with `providers::docker`), [`cluster::run`] | the request path, probes and rebuilds, the rollout runner, ACME orders, the stats sampler, notifications, Docker discovery, the cluster service |
//! | API | [`admin`] (with [`admin::dashboard`]) | command parsing, dispatch, the socket and the dashboard |
//! | wiring | [`server`], [`ctl`], [`import`], [`demo`], the binary | listeners, signals, the CLI |

// Denied everywhere; the two exceptions (`memory::release` and
// `memory::configure`, calls into glibc) carry their proofs.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms, unused_must_use)]
// Functions short enough to read (clippy.toml: too-many-lines-threshold).
#![warn(clippy::too_many_lines)]

pub mod accesslog;
pub mod acme;
pub mod admin;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod events;
pub mod fsutil;
pub mod health;
pub mod host;
pub mod import;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod middleware;
pub mod model;
pub mod notify;
pub mod providers;
pub mod proxy;
pub mod rollout;
pub mod routing;
pub mod rules;
pub mod server;
pub mod state;
pub mod stats;
pub mod tls;
pub mod upstream;
