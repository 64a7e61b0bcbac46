//! What Switchyard's tests and benchmarks share, by role:
//!
//! - [`upstream`]: real upstream servers on 127.0.0.1:0;
//! - [`process`]: the proxy under test — the real binary on a generated
//!   config — its admin API and `ctl`;
//! - [`client`]: HTTP/1.1 and raw-TCP clients;
//! - [`config`]: config builders;
//! - [`wait`]: polling with a deadline;
//! - [`plugins`]: the reference plugins built to WebAssembly components;
//! - [`etcd`]: real etcd servers for fleet tests.
//!
//! Everything is re-exported at the root: `use switchyard_test_support::*;`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

pub mod client;
pub mod config;
pub mod etcd;
pub mod plugins;
pub mod process;
pub mod upstream;
pub mod wait;

pub use client::*;
pub use config::*;
pub use etcd::Etcd;
pub use process::*;
pub use upstream::*;
pub use wait::*;
