//! SSH to one host (being written).
