//! The one integration-test binary: drives the real `sfuctl` binary and the real test bed.

mod audit;
mod deploy_ssh;
mod do_e2e;
mod offline_cli;
mod remote_ssh;
mod rendered_configs;
mod support;
mod do_provider;
mod aws_provider;
mod aws_e2e;
mod vultr_provider;
mod vultr_e2e;
mod conformance;
