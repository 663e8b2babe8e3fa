//! Test support: the real test bed (namespace hosts with sshd, fakes of cloud APIs).
#![allow(dead_code)]
pub mod cli;
pub mod cloud_deployment;
pub mod deployment;
pub mod netns;
pub mod api_fake;
pub mod do_fake;
pub mod freshvm;
pub mod linode_fake;
pub mod vultr_fake;
pub mod moto;
pub mod fault_proxy;
