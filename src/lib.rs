//! sfuctl: one YAML deployment spec to a running, reachable WebRTC media host (SFU or TURN relay).
//!
//! The library holds every noun (spec, port manifest, render, plan, remote); `main.rs` only parses the command
//! line, runs one command and reports its outcome.

pub mod artifact;
pub mod audit;
pub mod audit_all;
pub mod cli;
pub mod commands;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod locate;
pub mod log;
pub mod nft_eval;
pub mod nft_summary;
pub mod output;
pub mod owner;
pub mod plan;
pub mod port_range;
pub mod health;
pub mod interrupt;
pub mod ports;
pub mod range_map;
pub mod probe;
pub mod openssh;
pub mod remote;
pub mod render;
pub mod secret;
pub mod service;
pub mod spec;
pub mod spec_parse;
pub mod turn_client;
pub mod state;
pub mod validate;
pub mod wait;
pub mod http;
pub mod ice;
pub mod janus_session;
pub mod install;
pub mod invocation;
pub mod kind;
pub mod provider;
