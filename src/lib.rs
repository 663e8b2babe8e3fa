//! sfuctl: one YAML deployment spec to a running, reachable WebRTC media host (SFU or TURN relay).
//!
//! The library holds every noun (spec, port manifest, render, plan, remote); `main.rs` only parses the command
//! line, runs one command and reports its outcome.

pub mod cli;
pub mod commands;
pub mod error;
pub mod locate;
pub mod plan;
pub mod ports;
pub mod providers;
pub mod remote;
pub mod render;
pub mod spec;
