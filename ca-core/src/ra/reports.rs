//! Supervisors' reports (issue 18, docs/RA.md "Reports"): applications by status, fees
//! collected per outlet and day, and issuances and revocations per profile, over a period of
//! Hong Kong days — counts and sums only, never a name, a number or a mailbox. A supervisor
//! sees their outlet's, officers and admins every outlet's ([`Action::ViewReports`]).

use super::permissions::Action;
use super::session::StaffSession;
use crate::error::{Error, Result};
use crate::row::row;
use crate::store::Store;

/// Hong Kong time (UTC+8, no daylight saving): the day an outlet counts its fees by.
const HK_OFFSET: i64 = 8 * 3600;

/// A period of whole Hong Kong days, `from` to `to` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub from: time::Date,
    /// Last day.
    pub to: time::Date,
}

impl Period {
    /// The longest period a report covers: a year and a day.
    pub const MAX_DAYS: i64 = 366;

    /// `from` to `to` (`YYYY-MM-DD`), checked: a real date each, in order, at most
    /// [`Period::MAX_DAYS`] long.
    pub fn parse(from: &str, to: &str) -> Result<Period> {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let day = |field: &'static str, s: &str| {
            time::Date::parse(s.trim(), &fmt).map_err(|_| Error::Invalid {
                field,
                reason: "a date, YYYY-MM-DD".into(),
            })
        };
        let p = Period {
            from: day("from", from)?,
            to: day("to", to)?,
        };
        let days = (p.to - p.from).whole_days();
        if days < 0 {
            return Err(Error::Invalid {
                field: "to",
                reason: "on or after the first day".into(),
            });
        }
        if days >= Self::MAX_DAYS {
            return Err(Error::Invalid {
                field: "to",
                reason: format!("at most {} days after the first day", Self::MAX_DAYS - 1),
            });
        }
        Ok(p)
    }

    /// The 30 Hong Kong days up to and including `now`'s.
    pub fn last_30_days(now: i64) -> Period {
        let today = day_of(now);
        Period {
            from: today - time::Duration::days(29),
            to: today,
        }
    }

    /// Unix seconds: the first second of `from`, and the first after `to`, in Hong Kong.
    fn bounds(&self) -> (i64, i64) {
        let start = |d: time::Date| d.midnight().assume_utc().unix_timestamp() - HK_OFFSET;
        (
            start(self.from),
            start(self.to.next_day().unwrap_or(self.to)),
        )
    }
}

/// The Hong Kong day of Unix time `t`.
fn day_of(t: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(t + HK_OFFSET)
        .map(|d| d.date())
        .unwrap_or(time::Date::MIN)
}

row! {
    /// Applications made in the period, by outlet and state.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ByStatus {
        /// Outlet id.
        pub outlet: String,
        /// `submitted`, `approved`, `issued` or `rejected`.
        pub state: String,
        /// How many.
        pub count: i64,
    }
}

row! {
    struct FeeRow {
        outlet: String,
        day: i64,
        count: i64,
        cents: i64,
    }
}

/// Fees recorded at an outlet on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fees {
    /// Outlet id.
    pub outlet: String,
    /// The Hong Kong day.
    pub day: time::Date,
    /// How many fees.
    pub count: i64,
    /// Their sum, in cents.
    pub cents: i64,
}

row! {
    /// Certificates of a profile issued, revoked and put on hold in the period.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ByProfile {
        /// Profile id.
        pub profile: String,
        /// Issued (notBefore in the period; an attempt abandoned after a crash is not).
        pub issued: i64,
        /// Revoked (for good) in the period.
        pub revoked: i64,
        /// On hold, placed in the period and not yet released or made permanent.
        pub held: i64,
    }
}

/// The three reports of a period, within the member's reach.
#[derive(Debug, Clone)]
pub struct Reports {
    /// The period.
    pub period: Period,
    /// The outlet they are limited to (`None`: every outlet, and certificates of no outlet —
    /// batches — counted too).
    pub outlet: Option<String>,
    /// Applications by status.
    pub applications: Vec<ByStatus>,
    /// Fees per outlet and day.
    pub fees: Vec<Fees>,
    /// Issuances and revocations per profile.
    pub certificates: Vec<ByProfile>,
}

/// The reports of `period` the member may read: their outlet's for a supervisor, all for
/// officers and admins; [`Error::Forbidden`] for other roles.
pub async fn reports(store: &Store, staff: &StaffSession, period: Period) -> Result<Reports> {
    let outlet = staff.outlet_limit(Action::ViewReports)?.map(str::to_string);
    let only = outlet.clone().unwrap_or_default();
    let (from, to) = period.bounds();
    let applications = sqlx::query_as::<_, ByStatus>(
        "SELECT outlet, state, COUNT(*) AS count FROM applications \
         WHERE created_at >= $1 AND created_at < $2 AND ($3 = '' OR outlet = $3) \
         GROUP BY outlet, state ORDER BY outlet, state",
    )
    .bind(from)
    .bind(to)
    .bind(&only)
    .fetch_all(store.pool())
    .await?;
    let fees = sqlx::query_as::<_, FeeRow>(
        "SELECT outlet, CAST((fee_at + $4) / 86400 AS BIGINT) AS day, COUNT(*) AS count, \
         CAST(SUM(fee_amount) AS BIGINT) AS cents FROM applications \
         WHERE fee_at >= $1 AND fee_at < $2 AND fee_amount IS NOT NULL AND ($3 = '' OR outlet = $3) \
         GROUP BY outlet, CAST((fee_at + $4) / 86400 AS BIGINT) ORDER BY outlet, day",
    )
    .bind(from)
    .bind(to)
    .bind(&only)
    .bind(HK_OFFSET)
    .fetch_all(store.pool())
    .await?
    .into_iter()
    .map(|r| Fees {
        outlet: r.outlet,
        day: day_of(r.day * 86_400 - HK_OFFSET),
        count: r.count,
        cents: r.cents,
    })
    .collect();
    // An outlet's certificates: its applications' current ones and every one they renewed.
    let certificates = sqlx::query_as::<_, ByProfile>(
        "WITH RECURSIVE chain (serial) AS ( \
           SELECT certificate FROM applications WHERE certificate IS NOT NULL AND outlet = $3 \
           UNION SELECT c.renews FROM certificates c JOIN chain ON c.serial = chain.serial WHERE c.renews IS NOT NULL) \
         SELECT profile, \
           CAST(SUM(CASE WHEN state = 'issued' AND not_before >= $1 AND not_before < $2 THEN 1 ELSE 0 END) AS BIGINT) AS issued, \
           CAST(SUM(CASE WHEN revoked_at >= $1 AND revoked_at < $2 AND revocation_reason <> 6 THEN 1 ELSE 0 END) AS BIGINT) AS revoked, \
           CAST(SUM(CASE WHEN revoked_at >= $1 AND revoked_at < $2 AND revocation_reason = 6 THEN 1 ELSE 0 END) AS BIGINT) AS held \
         FROM certificates WHERE state IN ('issued', 'abandoned') \
         AND (($3 = '' AND profile <> 'unknown') OR serial IN (SELECT serial FROM chain)) \
         AND ((not_before >= $1 AND not_before < $2) OR (revoked_at >= $1 AND revoked_at < $2)) \
         GROUP BY profile ORDER BY profile",
    )
    .bind(from)
    .bind(to)
    .bind(&only)
    .fetch_all(store.pool())
    .await?;
    Ok(Reports {
        period,
        outlet,
        applications,
        fees,
        certificates,
    })
}

/// A report as CSV (RFC 4180: CRLF line ends; no field needs quoting — outlet ids, states,
/// profiles, dates and numbers). `which`: `applications`, `fees` or `certificates`.
pub fn csv(r: &Reports, which: &str) -> Result<String> {
    let mut out = String::new();
    let mut line = |fields: &[&dyn std::fmt::Display]| {
        let cells: Vec<String> = fields.iter().map(|f| csv_cell(&f.to_string())).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    match which {
        "applications" => {
            line(&[&"outlet", &"state", &"count"]);
            for a in &r.applications {
                line(&[&a.outlet, &a.state, &a.count]);
            }
        }
        "fees" => {
            line(&[&"outlet", &"day", &"count", &"total_hkd"]);
            for f in &r.fees {
                let total = format!("{}.{:02}", f.cents / 100, f.cents % 100);
                line(&[&f.outlet, &f.day, &f.count, &total]);
            }
        }
        "certificates" => {
            line(&[&"profile", &"issued", &"revoked", &"held"]);
            for c in &r.certificates {
                line(&[&c.profile, &c.issued, &c.revoked, &c.held]);
            }
        }
        _ => {
            return Err(Error::Invalid {
                field: "report",
                reason: "applications, fees or certificates".into(),
            })
        }
    }
    Ok(out)
}

/// One CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180 §2), and
/// never read as a formula by a spreadsheet (OWASP CSV injection: a leading `=`, `+`, `-`,
/// `@` is prefixed with `'`). An outlet id is an admin's text.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
