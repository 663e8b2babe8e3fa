//! The one integration-test binary: drives the real `sfuctl` binary and the real test bed.

mod architecture;
mod audit;
mod bad_input;
mod deploy_ssh;
mod do_e2e;
mod fresh_vm;
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
mod linode_provider;
mod linode_e2e;
