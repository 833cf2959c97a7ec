//! The auditor's pages (`/staff/audit`, `/staff/audit/export`) and the API export
//! (`GET /api/v1/audit/export`): the audit trail filtered, and exports an auditor verifies
//! offline with `ecert audit verify --export` (docs/AUDIT.md). Roles: the matrix's
//! `ViewAudit` (auditor, data owner).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use ca_core::audit::export::{self, Encoding, Filter};
use ca_core::error::Error;
use ca_core::ra;
use serde::Deserialize;

use super::i18n::{Lang, Texts};
use super::{html, rfc3339, staff_session, AppError, PageLang, Shared};

/// The filter fields of the page and the export (all optional).
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    reference: String,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    format: String,
}

/// `YYYY-MM-DD` (the day's start, or with `end` its last second) or RFC 3339.
fn parse_time(field: &'static str, s: &str, end: bool) -> Result<Option<i64>, Error> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || Error::Invalid {
        field,
        reason: "a date (YYYY-MM-DD) or an RFC 3339 time".into(),
    };
    if s.len() == 10 {
        let f = time::macros::format_description!("[year]-[month]-[day]");
        let d = time::Date::parse(s, &f).map_err(|_| bad())?;
        let t = d.midnight().assume_utc().unix_timestamp();
        return Ok(Some(if end { t + 86_399 } else { t }));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| bad())
}

impl AuditQuery {
    fn filter(&self) -> Result<Filter, Error> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        Ok(Filter {
            since: parse_time("since", &self.since, false)?,
            until: parse_time("until", &self.until, true)?,
            actor: text(&self.actor),
            kind: text(&self.kind),
            serial: text(&self.serial),
            reference: text(&self.reference),
            application_ids: Vec::new(),
        })
    }

    fn encoding(&self) -> Result<Encoding, Error> {
        match self.format.as_str() {
            "" => Ok(Encoding::Jsonl),
            f => Encoding::parse(f).map_err(|_| Error::Invalid {
                field: "format",
                reason: "jsonl or csv".into(),
            }),
        }
    }

    /// The filter as a query string, for the export links.
    fn query_string(&self) -> String {
        [
            ("since", &self.since),
            ("until", &self.until),
            ("actor", &self.actor),
            ("kind", &self.kind),
            ("serial", &self.serial),
            ("reference", &self.reference),
        ]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "staff_audit.html")]
struct AuditPage {
    t: &'static Texts,
    lang: Lang,
    q: AuditQuery,
    query: String,
    /// seq, time, kind, actor, subject, detail.
    rows: Vec<(i64, String, String, String, String, String)>,
    page: usize,
}

/// `GET /staff/audit`: the newest records the filter selects.
pub(super) async fn staff_audit(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let rows = match ra::audit_records(s.auth.store(), &staff, &filter).await {
        Ok(r) => r,
        Err(e) => return AppError::new(e, lang.0).into_response(),
    };
    let rows = rows
        .into_iter()
        .map(|r| {
            (
                r.seq,
                rfc3339(r.at),
                r.kind,
                r.actor,
                r.subject.unwrap_or_default(),
                r.detail,
            )
        })
        .collect();
    let query = q.query_string();
    html(
        AuditPage {
            t: lang.0.texts(),
            lang: lang.0,
            q,
            query,
            rows,
            page: ra::auditing_page(),
        },
        lang,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// The export as a download.
fn download(e: &export::Export, encoding: Encoding) -> Result<Response, Error> {
    let body = export::render(e, encoding)?;
    let ext = match encoding {
        Encoding::Jsonl => "jsonl",
        Encoding::Csv => "csv",
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.media_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"ecert-audit-{}.{ext}\"",
        e.checkpoint.seq
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// `GET /staff/audit/export`: the export the filter selects, as a file.
pub(super) async fn staff_audit_export(
    State(s): State<Shared>,
    lang: PageLang,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let staff = match staff_session(&s, &headers, lang.0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let result = async {
        let (filter, encoding) = (q.filter()?, q.encoding()?);
        let e = ra::audit_export(s.auth.store(), &staff, filter).await?;
        download(&e, encoding)
    }
    .await;
    result.unwrap_or_else(|e| AppError::new(e, lang.0).into_response())
}

/// `GET /api/v1/audit/export` for [`super::api`]: the export, or the error.
pub(super) async fn api_export(
    s: &Shared,
    staff: &ra::StaffSession,
    q: &AuditQuery,
) -> Result<Response, Error> {
    let (filter, encoding) = (q.filter()?, q.encoding()?);
    let e = ra::audit_export(s.auth.store(), staff, filter).await?;
    download(&e, encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_formats_parse() {
        assert_eq!(
            parse_time("since", "2026-11-01", false).unwrap(),
            Some(1_793_491_200)
        );
        assert_eq!(
            parse_time("until", "2026-11-01", true).unwrap(),
            Some(1_793_491_200 + 86_399)
        );
        assert_eq!(
            parse_time("since", "2026-11-01T08:00:00+08:00", false).unwrap(),
            Some(1_793_491_200)
        );
        assert_eq!(parse_time("since", " ", false).unwrap(), None);
        assert!(parse_time("since", "yesterday", false).is_err());
        let q = AuditQuery {
            kind: "issuance".into(),
            actor: "staff:clerk 1".into(),
            format: "xml".into(),
            ..AuditQuery::default()
        };
        assert_eq!(q.query_string(), "actor=staff:clerk%201&kind=issuance");
        assert!(q.encoding().is_err());
    }
}
