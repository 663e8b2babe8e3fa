//! The one integration-test binary: drives the real `sfuctl` binary and the real test bed.

mod architecture;
mod audit;
mod deploy_ssh;
mod do_e2e;
mod fresh_vm;
mod init_cli;
mod offline_cli;
mod operator_cli;
mod remote_access;
mod remote_ssh;
mod rendered_configs;
mod snapshots_cli;
mod support;
mod do_provider;
mod aws_provider;
mod aws_e2e;
mod vultr_provider;
mod vultr_e2e;
mod conformance;
mod ssh_upload_retry;
mod linode_provider;
mod linode_e2e;
mod verbosity;
mod audit_ranges;
mod service_truth;
mod secrets_never_leak;
