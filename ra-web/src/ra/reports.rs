//! Supervisors' reports at `/staff/reports` (issue 18, docs/RA.md "Reports"): applications by
//! status, fees per outlet and day, issuances and revocations per profile, for a period of
//! Hong Kong days, each also as CSV (`/staff/reports/{report}.csv`). Counts only; the rules
//! and the scoping are `ca_core::ra::reports`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use ca_core::ra::reports::{self, Period};
use serde::Deserialize;

use super::i18n::{Lang, Texts};
use super::problem_pages::now;
use super::{dollars, html, staff_session, AppError, PageLang, Shared};

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD` (both absent: the last 30 days).
#[derive(Deserialize)]
pub(super) struct PeriodQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl PeriodQuery {
    fn period(&self) -> Result<Period, ca_core::error::Error> {
        if self.from.is_empty() && self.to.is_empty() {
            Ok(Period::last_30_days(now()))
        } else {
            Period::parse(&self.from, &self.to)
        }
    }
}

#[derive(Template)]
#[template(path = "staff_reports.html")]
struct ReportsPage {
    t: &'static Texts,
    lang: Lang,
    from: String,
    to: String,
    all_outlets: bool,
    /// (outlet, state, count).
    applications: Vec<(String, String, i64)>,
    /// (outlet, day, count, total HK$).
    fees: Vec<(String, String, i64, String)>,
    /// (profile, issued, revoked, held).
    certificates: Vec<(String, i64, i64, i64)>,
}

/// `GET /staff/reports`.
pub(super) async fn page(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let r = match q.period() {
        Ok(p) => reports::reports(s.auth.store(), &staff, p).await,
        Err(e) => Err(e),
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    html(
        ReportsPage {
            t: lang.0.texts(),
            lang: lang.0,
            from: r.period.from.to_string(),
            to: r.period.to.to_string(),
            all_outlets: r.outlet.is_none(),
            applications: r
                .applications
                .iter()
                .map(|a| (a.outlet.clone(), a.state.clone(), a.count))
                .collect(),
            fees: r
                .fees
                .iter()
                .map(|f| {
                    (
                        f.outlet.clone(),
                        f.day.to_string(),
                        f.count,
                        dollars(f.cents),
                    )
                })
                .collect(),
            certificates: r
                .certificates
                .iter()
                .map(|c| (c.profile.clone(), c.issued, c.revoked, c.held))
                .collect(),
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /staff/reports/{report}.csv`: one report as a CSV download.
pub(super) async fn csv(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
    Path(file): Path<String>,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // `/staff/reports/{id}` was a problem report before the queue moved to /staff/problems.
    let Some(which) = file.strip_suffix(".csv") else {
        return axum::response::Redirect::permanent(&format!(
            "/staff/problems/{}",
            file.chars()
                .filter(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect::<String>()
        ))
        .into_response();
    };
    let body = match q.period() {
        Ok(p) => match reports::reports(s.auth.store(), &staff, p).await {
            Ok(r) => reports::csv(&r, which).map(|b| (b, p)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (body, p) = match body {
        Ok(b) => b,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"ecert-{which}-{}-{}.csv\"",
        p.from, p.to
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
