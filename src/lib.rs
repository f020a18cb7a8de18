//! switchyard: a reverse proxy for blue-green and canary releases on small hosts.
//!
//! Requests are routed by Host to a pool whose versions share traffic by
//! weight. Every routing decision reads one immutable [`routing::RoutingTable`]
//! held in an `ArcSwap`; every change builds a new table and swaps it in, so a
//! weight change or a rollback takes effect on the very next request.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML model, validation with line:col diagnostics, defaults |
//! | [`host`] | host name normalization (case, port, trailing dot), wildcard patterns |
//! | [`import`] | `switchyard import traefik`: Traefik labels, files and manifests to a config |
//! | [`balance`] | smooth weighted schedule, sticky buckets, backend round robin (pure) |
//! | [`rollout`] | the canary / blue-green controller: plans, gates, judgement, promote, roll back |
//! | [`routing`] | the `RoutingTable` snapshot: host lookup, version and backend choice |
//! | [`health`] | active probes (rise/fall), rebuilds on health changes |
//! | [`metrics`] | Prometheus series, handles resolved at build, the windowed reader |
//! | [`upstream`] | backend live state (health, ejection, in-flight) and pooled connections |
//! | [`proxy`] | the hyper service: route, pick, forward, retry, errors, upgrades |
//! | [`state`] | runtime overrides, the state file and the `StateStore` trait |
//! | [`events`] | the audit log |
//! | [`app`] | the shared instance and the single writer that changes it |
//! | [`admin`] | the admin API on a Unix socket: parse, dispatch, serve |
//! | [`dashboard`] | the web dashboard: embedded page, the admin API over loopback TCP behind a token, live figures |
//! | [`ctl`] | the `switchyard ctl` client and its human output |
//! | [`server`] | listeners, signals, graceful shutdown |
//! | [`tls`] | TLS termination: SNI certificate store, ALPN, ACME challenge answers |
//! | [`acme`] | ACME (Let's Encrypt) orders, storage and renewal |
//! | [`demo`] | built-in origins for `switchyard demo` |
//! | [`accesslog`] | the access log: one line per request, written off the request path |
//! | [`fsutil`] | durable writes (temp, fsync, rename) |
//! | [`error`] | `AdminError` |

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms, unused_must_use)]

pub mod accesslog;
pub mod acme;
pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod ctl;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod h1;
pub mod health;
pub mod host;
pub mod import;
pub mod metrics;
pub mod proxy;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod state;
pub mod tls;
pub mod upstream;
