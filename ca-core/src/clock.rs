//! The signer's clock, checked before it dates anything (issue 13, defect 2).
//!
//! Every certificate, CRL and OCSP response carries times from this host's clock; a clock
//! hours ahead makes relying parties reject them as "not yet valid", one behind makes a CRL's
//! thisUpdate go backwards while its CRLNumber goes up. So:
//!
//! - **Against a reference** (`[clock] reference`): `database` compares with the PostgreSQL
//!   server's `clock_timestamp()` (a different host's clock the deployment already trusts),
//!   halving the query's round trip; `auto` (the default) does so on PostgreSQL and has no
//!   reference on SQLite (the same host). A reading is at most [`READING_SECS`] old when used.
//!   Beyond `[clock] max_skew_seconds` — or with the reference unreachable — nothing is signed
//!   ([`Error::Clock`]), `/healthz` says why and `/metrics` shows the skew; once the clock is
//!   right again the next reading lets signing resume, with no restart.
//! - **Never backwards** (every engine, reference or not): a CRL whose thisUpdate would be
//!   earlier than its predecessor's is not published ([`crate::authority::Authority::publish_crl`]).
//!
//! Without a reference `/healthz` says the clock is `unchecked`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{ClockConfig, ClockReference};
use crate::error::{Error, Result};
use crate::store::{Engine, Store};

/// Whether `config` makes the database server's clock the reference on `engine`.
pub fn uses_database(config: &ClockConfig, engine: Engine) -> bool {
    match config.reference {
        ClockReference::Database => true,
        ClockReference::None => false,
        ClockReference::Auto => engine == Engine::Postgres,
    }
}

/// The time (Unix seconds) a revocation is dated with, from this host's clock — after checking
/// it against the database server's when the store has that reference
/// ([`Store::with_clock_check`]): a revoking process whose clock is off (the CLI on another
/// host, an RA instance) would otherwise date revocations hours in the past or the future
/// (issue 13, defect 2), and a revocationDate after the next CRL's thisUpdate stops that CRL.
/// Beyond the bound, [`Error::Clock`] and nothing is revoked; the caller may try again.
pub async fn revocation_time(store: &Store) -> Result<i64> {
    let Some(max_skew_ms) = store.clock_bound_ms() else {
        return Ok(unix_ms() / 1000);
    };
    let t0 = unix_ms();
    let started = Instant::now();
    let reference_ms = tokio::time::timeout(Duration::from_secs(2), store.reference_time_ms())
        .await
        .map_err(|_| {
            Error::Clock(
                "cannot check the clock: the database server's clock: no answer in 2 s".into(),
            )
        })??;
    let t1 = t0 + i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    match judge((t0 + t1) / 2, reference_ms, max_skew_ms) {
        (_, Some(fault)) => Err(Error::Clock(format!(
            "{fault}: nothing is revoked from this host until it is set right"
        ))),
        (_, None) => Ok(t1 / 1000),
    }
}

/// A reading older than this is taken again before signing.
pub const READING_SECS: u64 = 5;

/// What the last reading found.
#[derive(Debug, Clone)]
pub struct ClockStatus {
    /// `database` or `none`.
    pub reference: &'static str,
    /// This host's clock minus the reference's, in milliseconds (with a reference).
    pub skew_ms: Option<i64>,
    /// Why the clock is not to be trusted now (beyond the bound, or no reading).
    pub fault: Option<String>,
    /// The bound, in milliseconds.
    pub max_skew_ms: i64,
}

#[derive(Debug)]
struct Reading {
    at: Instant,
    status: ClockStatus,
}

/// The clock check of one signer process.
#[derive(Debug)]
pub struct ClockGuard {
    reference: bool,
    max_skew_ms: i64,
    last: Mutex<Option<Reading>>,
}

/// The verdict on one reading: this host's time and the reference's at the same moment
/// (milliseconds since the epoch). Pure.
pub fn judge(local_ms: i64, reference_ms: i64, max_skew_ms: i64) -> (i64, Option<String>) {
    let skew = local_ms - reference_ms;
    let fault = (skew.abs() > max_skew_ms).then(|| {
        format!(
            "this host's clock is {:.1} s {} the database server's (at most {:.1} s allowed)",
            skew.abs() as f64 / 1000.0,
            if skew > 0 { "ahead of" } else { "behind" },
            max_skew_ms as f64 / 1000.0
        )
    });
    (skew, fault)
}

fn unix_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ClockGuard {
    /// The guard for `config` on the engine of `store`.
    pub fn new(config: &ClockConfig, store: &Store) -> ClockGuard {
        ClockGuard {
            reference: uses_database(config, store.engine()),
            max_skew_ms: i64::from(config.max_skew_seconds) * 1000,
            last: Mutex::new(None),
        }
    }

    /// Takes a reading now (one query to the reference, if any) and keeps it.
    pub async fn measure(&self, store: &Store) -> ClockStatus {
        let status = if self.reference {
            let t0 = unix_ms();
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(2), store.reference_time_ms()).await;
            let t1 = t0 + i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
            match r {
                Ok(Ok(reference_ms)) => {
                    let (skew, fault) = judge((t0 + t1) / 2, reference_ms, self.max_skew_ms);
                    let fault =
                        fault.map(|f| format!("{f}: nothing is signed until it is set right"));
                    ClockStatus {
                        reference: "database",
                        skew_ms: Some(skew),
                        fault,
                        max_skew_ms: self.max_skew_ms,
                    }
                }
                Ok(Err(e)) => self.unreadable(format!("the database server's clock: {e}")),
                Err(_) => self.unreadable("the database server's clock: no answer in 2 s".into()),
            }
        } else {
            ClockStatus {
                reference: "none",
                skew_ms: None,
                fault: None,
                max_skew_ms: self.max_skew_ms,
            }
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Reading {
                at: Instant::now(),
                status: status.clone(),
            });
        }
        status
    }

    fn unreadable(&self, why: String) -> ClockStatus {
        ClockStatus {
            reference: "database",
            skew_ms: None,
            fault: Some(format!("cannot check the clock: {why}")),
            max_skew_ms: self.max_skew_ms,
        }
    }

    /// The last reading, if any.
    pub fn status(&self) -> Option<ClockStatus> {
        self.last
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|r| r.status.clone()))
    }

    /// Before signing: a reading at most [`READING_SECS`] old (taken now if not) that found no
    /// fault, or [`Error::Clock`].
    pub async fn check(&self, store: &Store) -> Result<()> {
        if !self.reference {
            return Ok(());
        }
        let fresh = self.last.lock().ok().and_then(|l| {
            l.as_ref()
                .filter(|r| r.at.elapsed() < Duration::from_secs(READING_SECS))
                .map(|r| r.status.clone())
        });
        let status = match fresh {
            Some(s) => s,
            None => self.measure(store).await,
        };
        match status.fault {
            Some(why) => Err(Error::Clock(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_beyond_the_bound_is_a_fault_either_way() {
        let now = 1_800_000_000_000;
        assert_eq!(judge(now, now, 5_000), (0, None));
        assert!(judge(now + 4_999, now, 5_000).1.is_none());
        let (skew, ahead) = judge(now + 3 * 3_600_000, now, 5_000);
        assert_eq!(skew, 10_800_000);
        assert!(ahead.unwrap().contains("10800.0 s ahead of"));
        let (_, behind) = judge(now - 5_001, now, 5_000);
        assert!(behind.unwrap().contains("behind"));
    }
}
