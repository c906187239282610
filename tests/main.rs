//! keysim's integration tests, in one binary (one link, shared helpers).

mod acceptance;
mod cli;
mod common;
mod determinism;
mod diagnostics;
mod estimators;
mod gate;
mod health;
mod invalid;
mod logs;
mod mock;
mod plan;
mod properties;
mod proxy;
mod proxy_requests;
mod proxy_traffic;
mod replicas;
mod report;
mod warnings;
