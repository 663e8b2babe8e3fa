//! The stateful DigitalOcean fake (`tests/fakes/digitalocean/server.py`), started by the shared launcher
//! ([`ApiFake`]): everything but the script and the flag is the same for every cloud fake.

use std::ops::Deref;

pub use crate::support::api_fake::pool;
use crate::support::api_fake::{ApiFake, FakeKind};

/// The DigitalOcean fake's command line.
pub const DIGITALOCEAN: FakeKind = FakeKind { title: "DigitalOcean", label: "do", script: "tests/fakes/digitalocean/server.py", credential_flag: "--token" };

/// A running DigitalOcean fake (see [`ApiFake`]: its drop checks for OpenAPI violations).
pub struct DoFake(ApiFake);

impl DoFake {
    /// Starts a fake with an address pool of ten 10.200.250.x addresses and no delays.
    pub fn start() -> DoFake {
        Self::start_with(&["--address-pool", &pool(10)])
    }

    /// Starts a fake with extra flags (e.g. `--address-pool`, `--boot-delay`).
    pub fn start_with(args: &[&str]) -> DoFake {
        DoFake(ApiFake::start(DIGITALOCEAN, args))
    }
}

impl Deref for DoFake {
    type Target = ApiFake;

    fn deref(&self) -> &ApiFake {
        &self.0
    }
}

impl crate::support::cloud_deployment::CloudEnv for DoFake {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("DIGITALOCEAN_TOKEN", self.token().to_string()), ("DIGITALOCEAN_API_URL", self.url())]
    }
}
