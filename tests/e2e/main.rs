//! End-to-end tests: the real `switchyard` binary between real clients and
//! real upstreams, all on 127.0.0.1 with ports chosen by the kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod attribution;
mod contract;
mod dashboard;
mod faults;
mod flagd_reference;
mod flags;
mod fleet;
mod grpc;
mod hardening;
mod js_plugins;
mod lifecycle;
mod mirror;
mod packaging;
mod plugins;
mod protocols;
mod release;
mod report;
mod rolling;
mod rollout;
mod routing;
mod split;
mod streaming;
mod suspension;
mod upgrade;
mod upstreams;
