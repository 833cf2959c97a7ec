//! End-to-end tests of the `ecert` binary: one test binary (link time), one module per area.
//! Every test makes its own CA (data directory, SoftHSM2 token, database), so nextest runs them
//! in parallel. See `tests/src/lib.rs` for the harness and its environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/common.rs"]
mod common;

#[path = "e2e/apply.rs"]
mod apply;
#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/backup.rs"]
mod backup;
#[path = "e2e/browser.rs"]
mod browser;
#[path = "e2e/bulk.rs"]
mod bulk;
#[path = "e2e/cas.rs"]
mod cas;
#[path = "e2e/ceremony.rs"]
mod ceremony;
#[path = "e2e/config.rs"]
mod config;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/crl.rs"]
mod crl;
#[path = "e2e/custody.rs"]
mod custody;
#[path = "e2e/directory.rs"]
mod directory;
#[path = "e2e/dr.rs"]
mod dr;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/hierarchy.rs"]
mod hierarchy;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/ldap.rs"]
mod ldap;
#[path = "e2e/nss.rs"]
mod nss;
#[path = "e2e/ocsp.rs"]
mod ocsp;
#[path = "e2e/profiles.rs"]
mod profiles;
#[path = "e2e/ra.rs"]
mod ra;
#[path = "e2e/reminders.rs"]
mod reminders;
#[path = "e2e/renewal.rs"]
mod renewal;
#[path = "e2e/revoke.rs"]
mod revoke;
#[path = "e2e/rolling.rs"]
mod rolling;
#[path = "e2e/rollover.rs"]
mod rollover;
#[path = "e2e/serve.rs"]
mod serve;
#[path = "e2e/standby.rs"]
mod standby;
