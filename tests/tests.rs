//! The one integration-test binary: drives the real `sfuctl` binary and the real test bed.

mod support;
