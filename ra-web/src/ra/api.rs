//! The JSON API for integrators under `/api/v1/` (docs/RA.md "JSON API"): the counter
//! operations, authenticated by a staff API token (`Authorization: Bearer ...`, made with
//! `ecert token`, or a sign-in's session token from `ecert login`), scoped like the staff pages (the token's outlet; another outlet's
//! application is 404). Described by OpenAPI 3.1 at `/api/v1/openapi.json`, generated from
//! these handlers and types (utoipa). Responses carry only what the operation needs: personal
//! fields are masked, as on the staff screens.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ca_core::error::Error;
use ca_core::ra::{self, Decided, Decision, StaffSession};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::problem_pages::{now, send_notices};
use super::{status_of, RaState};

type Shared = Arc<RaState>;

/// The API routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/session", post(session_create).delete(session_end))
        .route("/api/v1/applications", get(list).post(create))
        .route("/api/v1/applications/{id}", get(show))
        .route("/api/v1/applications/{id}/identity", post(identity))
        .route("/api/v1/applications/{id}/fee", post(fee))
        .route("/api/v1/applications/{id}/organisation", post(organisation))
        .route("/api/v1/applications/{id}/domains", post(domains))
        .route("/api/v1/applications/{id}/decision", post(decision))
        .route("/api/v1/applications/{id}/certificate", get(certificate))
        .route(
            "/api/v1/certificates/{serial}/revocation",
            post(certificate_revocation),
        )
        .route(
            "/api/v1/problem-reports",
            get(problem_reports).post(problem_report),
        )
        .route("/api/v1/problem-reports/{id}", get(problem_report_show))
        .route("/api/v1/audit/export", get(audit_export))
        .route(
            "/api/v1/personal-data/activate",
            post(personal_data_activate),
        )
        .route(
            "/api/v1/officer-proposals",
            get(officer_proposals).post(officer_propose),
        )
        .route("/api/v1/tokens", post(token_create))
        .route("/api/v1/staff", get(staff_list).post(staff_add))
        .route("/api/v1/staff/{username}/{action}", post(staff_change))
        .route("/api/v1/outlets", get(outlet_list).post(outlet_add))
        .route("/api/v1/outlets/{id}/{action}", post(outlet_change))
        .route(
            "/api/v1/officer-proposals/{id}/confirm",
            post(officer_confirm),
        )
        .route(
            "/api/v1/officer-proposals/{id}/withdraw",
            post(officer_withdraw),
        )
        .route(
            "/api/v1/problem-reports/{id}/preliminary",
            post(problem_report_preliminary),
        )
        .route(
            "/api/v1/problem-reports/{id}/decision",
            post(problem_report_decision),
        )
        .route("/api/v1/organisations", post(organisation_register))
        .route(
            "/api/v1/organisations/{id}/domains",
            get(organisation_domains).post(organisation_domain_add),
        )
        .route(
            "/api/v1/organisations/{id}/domains/{domain}/validation",
            post(organisation_domain_validate),
        )
        .route(
            "/api/v1/organisations/{id}/batch-tokens",
            post(organisation_batch_token).delete(organisation_batch_tokens_revoke),
        )
        .route(
            "/api/v1/batches",
            // A batch of 20,000 rows with their CSRs.
            post(batch_submit).layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024)),
        )
        .route("/api/v1/batches/{id}", get(batch_show))
        .route("/api/v1/directory", get(directory))
        .route("/api/v1/batches/{id}/certificates", get(batch_certificates))
        .route(
            "/api/v1/staff-certificates/{client_row_id}",
            get(staff_certificate_show),
        )
        .route(
            "/api/v1/staff-certificates/{client_row_id}/revocation",
            post(staff_certificate_revocation),
        )
        .route(
            "/api/v1/staff-certificates/{client_row_id}/release",
            post(staff_certificate_release),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    header::HeaderValue::from_static("nosniff"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                r
            },
        ))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ecert registration authority API", version = "1"),
    paths(
        list, create, show, identity, organisation, domains, fee, decision, certificate,
        problem_report, problem_reports, problem_report_show, problem_report_preliminary,
        problem_report_decision, audit_export, personal_data_activate, session_create,
        session_end, token_create, staff_list, staff_add, staff_change, outlet_list, outlet_add,
        outlet_change, officer_proposals, certificate_revocation,
        officer_propose, officer_confirm, officer_withdraw, organisation_register,
        organisation_domains, organisation_domain_add, organisation_domain_validate,
        organisation_batch_token, organisation_batch_tokens_revoke, batch_submit, batch_show, batch_certificates, directory,
        staff_certificate_revocation, staff_certificate_show, staff_certificate_release
    ),
    components(schemas(
        ApiError, ApplicationRow, NewApplication, Created, ApplicationView, IdentityCheck,
        OrganisationCheck, DomainView, Domains, Fee, DecisionRequest, DecisionResult,
        NewProblemReport, ProblemReportReceived, ProblemReport, Findings, ReportDecision,
        Activation, Activated, Proposal, ProposalOut, SignIn, SessionOut, AccountOut, NewAccount,
        Enrolment, StaffChange, OutletOut, OutletIn, NewToken, StatusChangeRequest,
        StatusChanged, ChangedCertificate, NewOrganisation, OrganisationOut, NewDomain,
        DomainOut, NewBatchToken, BatchTokenOut, BatchTokensRevokedOut, BatchReceiptOut, RowError, BatchStatusOut,
        BatchRowOut, DirectoryEntry, BatchSubmission, BatchRowJson, RowRevocation,
        RowRevoked, StaffCertificate
    )),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "staff_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let requirement = utoipa::openapi::security::SecurityRequirement::new(
            "staff_token",
            Vec::<String>::new(),
        );
        openapi.security = Some(vec![requirement]);
    }
}

/// The OpenAPI description of this API.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// An error: a stable code, a message a person can act on, and the id of the log line.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// `not_found`, `invalid`, `conflict`, `too_many_attempts`, `expired`, `unauthorized`,
    /// `forbidden`, `unavailable` (503: the database, DNS or the clock; try again) or
    /// `internal`.
    error: &'static str,
    /// What went wrong (never personal data).
    message: String,
    /// The request id in the service's log.
    request_id: String,
}

struct ApiFailure(Error);

impl From<Error> for ApiFailure {
    fn from(e: Error) -> Self {
        ApiFailure(e)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let request_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let (error, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", self.0.to_string()),
            StatusCode::UNPROCESSABLE_ENTITY => ("invalid", self.0.to_string()),
            StatusCode::CONFLICT => ("conflict", self.0.to_string()),
            StatusCode::TOO_MANY_REQUESTS => ("too_many_attempts", self.0.to_string()),
            StatusCode::GONE => ("expired", self.0.to_string()),
            StatusCode::UNAUTHORIZED => ("unauthorized", self.0.to_string()),
            StatusCode::FORBIDDEN => ("forbidden", self.0.to_string()),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", super::public_message(&self.0)),
            _ => {
                tracing::error!(request_id, error = %self.0, "API request failed");
                (
                    "internal",
                    "the service could not complete this request".to_string(),
                )
            }
        };
        if status != StatusCode::INTERNAL_SERVER_ERROR {
            tracing::info!(request_id, status = status.as_u16(), error = %self.0, "API request refused");
        }
        let mut r = (
            status,
            Json(ApiError {
                error,
                message,
                request_id,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"ecert\""),
            );
        }
        r
    }
}

/// The staff member behind the bearer token.
struct Staff(StaffSession);

impl FromRequestParts<Shared> for Staff {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::SignInFailed)?;
        let ip = s.client_ip(parts);
        s.limits
            .check("api", ip, 600)
            .map_err(|e| ApiFailure(e.error))?;
        let idle = i64::from(s.auth.config().ra.session_idle_minutes) * 60;
        match ra::api_session_idle(s.auth.store(), token.trim(), idle).await {
            Ok(session) => Ok(Staff(session)),
            Err(Error::NotFound | Error::Expired(_)) => Err(ApiFailure(Error::SignInFailed)),
            Err(e) => Err(ApiFailure(e)),
        }
    }
}

/// One line of the outlet's queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationRow {
    id: String,
    reference: String,
    profile: String,
    name: String,
    /// `awaiting_email`, `awaiting_visit`, `awaiting_second_approval`, `approved`, `issuance_failed`, `issued` or
    /// `rejected`.
    status: &'static str,
    /// Unix seconds.
    created_at: i64,
}

/// `?reference=` filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the application with this reference.
    #[serde(default)]
    reference: String,
}

/// The open applications of the token's outlet (or one by reference).
#[utoipa::path(get, path = "/api/v1/applications", params(ListQuery),
    responses((status = 200, body = [ApplicationRow]), (status = 401, body = ApiError)))]
async fn list(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ApplicationRow>>, ApiFailure> {
    let rows = ra::queue(
        s.auth.store(),
        &staff,
        (!q.reference.is_empty()).then_some(q.reference.as_str()),
    )
    .await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ApplicationRow {
                id: r.id,
                reference: r.reference,
                profile: r.profile,
                name: r.name,
                status: r.status.key(),
                created_at: r.created_at,
            })
            .collect(),
    ))
}

/// A walk-in or bulk application entered by staff for their outlet; the applicant's key is in
/// the CSR they brought. The e-mail code goes to the applicant.
#[derive(Deserialize, ToSchema)]
pub struct NewApplication {
    /// `personal`, `personal-minor`, `organisational`, `organisational-role`, `encipherment` or
    /// `server`. For the organisation profiles the personal fields are the Authorised
    /// Representative's.
    profile: String,
    surname: String,
    given_name: String,
    #[serde(default)]
    name_zh: String,
    email: String,
    /// As printed on the card, e.g. `A123456(3)`.
    hkid: String,
    /// `YYYY-MM-DD`.
    date_of_birth: String,
    phone: String,
    address: String,
    #[serde(default)]
    consent_notices: bool,
    /// Publish the certificate in the public directory (the applicant's choice; changeable on
    /// the tracking page).
    #[serde(default)]
    publish_in_directory: bool,
    revocation_secret: String,
    /// PEM or base64 DER PKCS#10.
    csr: String,
    /// `en` or `zh-HK`.
    #[serde(default = "default_language")]
    language: String,
    /// Organisation name (organisational, encipherment, server).
    #[serde(default)]
    organization: String,
    /// `ntr` (default: a Business Registration number in `org_id`) or `gov` (a government
    /// bureau, department or statutory body; `org_id` empty): organizationIdentifier
    /// `NTRHK-<number>` or `GOVHK`.
    #[serde(default)]
    org_register: String,
    /// Hong Kong Business Registration number, 8 digits.
    #[serde(default)]
    org_id: String,
    /// organisational: the Authorised User named in the certificate.
    #[serde(default)]
    user_surname: String,
    #[serde(default)]
    user_given_name: String,
    /// organisational-role: the Authorised User's role (subject title).
    #[serde(default)]
    user_title: String,
    /// server: the DNS names (no wildcards, at most 50).
    #[serde(default)]
    dns_names: Vec<String>,
}

// Personal data: `Debug` names the type only.
impl std::fmt::Debug for NewApplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewApplication { .. }")
    }
}

impl std::fmt::Debug for IdentityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityCheck { .. }")
    }
}

fn default_language() -> String {
    "en".into()
}

/// What the applicant must be given (the tracking secret is shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    id: String,
    reference: String,
    tracking_secret: String,
}

#[utoipa::path(post, path = "/api/v1/applications", request_body = NewApplication,
    responses((status = 201, body = Created), (status = 422, body = ApiError), (status = 401, body = ApiError)))]
async fn create(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(a): Json<NewApplication>,
) -> Result<Response, ApiFailure> {
    let language = a.language.clone();
    let submitted = ra::enter(
        &s.auth,
        &staff,
        ra::NewApplication {
            profile: a.profile,
            surname: a.surname,
            given_name: a.given_name,
            name_zh: a.name_zh,
            email: a.email,
            hkid: a.hkid,
            date_of_birth: a.date_of_birth,
            phone: a.phone,
            address: a.address,
            // Set by ra::enter: the member's outlet and name.
            outlet: String::new(),
            consent_notices: a.consent_notices,
            publish_in_directory: a.publish_in_directory,
            revocation_secret: a.revocation_secret,
            csr: csr_bytes(&a.csr)?,
            language: a.language,
            entered_by: None,
            organization: a.organization,
            org_register: a.org_register,
            org_id: a.org_id,
            user_surname: a.user_surname,
            user_given_name: a.user_given_name,
            user_title: a.user_title,
            dns_names: a.dns_names,
        },
    )
    .await?;
    let _ = super::send_code(
        &s.mailer,
        &s.auth.config().ca.base_url,
        super::Lang::parse(&language),
        &submitted.email,
        &submitted.reference,
        &submitted.email_code,
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id: submitted.id,
            reference: submitted.reference,
            tracking_secret: submitted.secret,
        }),
    )
        .into_response())
}

/// The `csr` field's bytes: PEM as given, or the base64 of DER decoded (as the field's
/// documentation promises; it was passed on undecoded, so DER never parsed).
fn csr_bytes(field: &str) -> Result<Vec<u8>, ApiFailure> {
    let text = field.trim();
    if text.is_empty() || text.starts_with("-----BEGIN") {
        return Ok(text.as_bytes().to_vec());
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, compact).map_err(|_| {
        ApiFailure(Error::Invalid {
            field: "csr",
            reason: "a PEM certification request, or its DER in base64".into(),
        })
    })
}

/// An application as staff see it: personal fields masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationView {
    id: String,
    reference: String,
    profile: String,
    version: i64,
    status: &'static str,
    surname: String,
    given_name: String,
    name_zh: String,
    email: String,
    email_confirmed: bool,
    hkid_masked: String,
    identity_checked: bool,
    fee_recorded: bool,
    fee_due_cents: u32,
    approvals: usize,
    dual_control: bool,
    certificate: Option<String>,
    rejected_reason: Option<String>,
    /// Organisation name (organisational, encipherment, server).
    organization: Option<String>,
    /// Business registration number (empty for a government entity).
    org_id: Option<String>,
    /// `NTR` or `GOV`.
    org_register: Option<String>,
    /// organisational: the Authorised User named in the certificate.
    authorised_user: Option<String>,
    /// The organisation's documents were checked for this version.
    organisation_checked: bool,
    /// server: the Random Value to publish at `_ecert-challenge.<name>` (TXT).
    random_value: Option<String>,
    /// server: each DNS name and its validation.
    domains: Vec<DomainView>,
    /// Why the last issuance did not complete, if it did not.
    issue_error: Option<String>,
}

/// One DNS name of a server application.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainView {
    domain: String,
    /// The TXT record's name.
    record: String,
    validated: bool,
    /// Why the last check did not validate it.
    problem: Option<String>,
}

fn domain_views(list: Vec<ra::DomainStatus>) -> Vec<DomainView> {
    list.into_iter()
        .map(|d| DomainView {
            domain: d.domain,
            record: d.record,
            validated: d.validated,
            problem: d.problem,
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/applications/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ApplicationView), (status = 404, body = ApiError)))]
async fn show(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<ApplicationView>, ApiFailure> {
    let v = ra::staff_view(&s.auth, &staff, &id).await?;
    Ok(Json(ApplicationView {
        id: v.id,
        reference: v.reference,
        profile: v.profile,
        version: v.version,
        status: v.status.key(),
        surname: v.surname,
        given_name: v.given_name,
        name_zh: v.name_zh,
        email: v.email,
        email_confirmed: v.email_confirmed,
        hkid_masked: v.hkid_masked,
        identity_checked: v.identity_checked,
        fee_recorded: v.fee.is_some(),
        fee_due_cents: v.fee_due,
        approvals: v.approvals.len(),
        dual_control: v.dual_control,
        certificate: v.certificate,
        rejected_reason: v.rejected_reason,
        organization: v.organization.as_ref().map(|o| o.0.clone()),
        org_id: v.organization.map(|o| o.1),
        org_register: v.org_register,
        authorised_user: v.authorised_user,
        organisation_checked: v.organisation_checked,
        random_value: v.dcv_token,
        domains: domain_views(v.domains),
        issue_error: v.issue_error,
    }))
}

/// The counter check of the organisation: the number typed from the Business Registration
/// Certificate (empty for a government entity), both documents (the registration and the
/// organisation's authorisation of its representative) sighted, and for a server application
/// the locality of the registered address (the certificate's localityName).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrganisationCheck {
    version: i64,
    #[serde(default)]
    org_id: String,
    documents_sighted: bool,
    #[serde(default)]
    locality: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/applications/{id}/organisation", params(("id" = String, Path)), request_body = OrganisationCheck,
    responses((status = 204), (status = 422, body = ApiError), (status = 409, body = ApiError)))]
async fn organisation(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<OrganisationCheck>,
) -> Result<StatusCode, ApiFailure> {
    ra::check_organisation(
        &s.auth,
        &staff,
        &id,
        b.version,
        &b.org_id,
        b.documents_sighted,
        b.locality.as_deref(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The outcome of a domain control check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Domains {
    /// The Random Value (a new one when the old was over 30 days old).
    random_value: String,
    domains: Vec<DomainView>,
}

#[utoipa::path(post, path = "/api/v1/applications/{id}/domains", params(("id" = String, Path)),
    responses((status = 200, body = Domains), (status = 409, body = ApiError)))]
async fn domains(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<Domains>, ApiFailure> {
    let (random_value, list) = ra::validate_domains_at_counter(&s.auth, &staff, &id).await?;
    Ok(Json(Domains {
        random_value,
        domains: domain_views(list),
    }))
}

/// The counter identity check: the number typed from the original card.
#[derive(Deserialize, ToSchema)]
pub struct IdentityCheck {
    version: i64,
    hkid: String,
    card_sighted: bool,
    /// personal-minor: a parent or guardian is present and consents.
    #[serde(default)]
    guardian_consent: bool,
}

#[utoipa::path(post, path = "/api/v1/applications/{id}/identity", params(("id" = String, Path)), request_body = IdentityCheck,
    responses((status = 204), (status = 422, body = ApiError), (status = 409, body = ApiError)))]
async fn identity(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<IdentityCheck>,
) -> Result<StatusCode, ApiFailure> {
    ra::check_identity(
        &s.auth,
        &staff,
        &id,
        b.version,
        &b.hkid,
        b.card_sighted,
        b.guardian_consent,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The fee paid at the counter.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Fee {
    amount_cents: i64,
    /// `cash`, `octopus`, `card` or `cheque`.
    method: String,
    receipt: String,
}

#[utoipa::path(post, path = "/api/v1/applications/{id}/fee", params(("id" = String, Path)), request_body = Fee,
    responses((status = 204), (status = 422, body = ApiError)))]
async fn fee(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<Fee>,
) -> Result<StatusCode, ApiFailure> {
    ra::record_fee(&s.auth, &staff, &id, b.amount_cents, &b.method, &b.receipt).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member's own integration token.
#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    /// What it is for.
    #[serde(default)]
    label: String,
    /// How many days it lasts (1 to 366).
    days: u32,
    /// read, enter, decide, activate (comma-separated): only what the integration needs.
    scopes: String,
}

/// Makes an integration token acting as the signed-in member (a session token: the member
/// present, with the second factor), within the scopes asked; printed once. Nobody makes one
/// for someone else.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 201, body = Object), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
async fn token_create(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<NewToken>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiFailure> {
    staff.require(ra::Scope::Session)?;
    let scopes = ra::Scopes::parse(&b.scopes)?;
    let label = if b.label.trim().is_empty() {
        "integration"
    } else {
        b.label.trim()
    };
    let token = ra::create_api_token(
        s.auth.store(),
        &staff.username,
        label,
        b.days,
        scopes,
        &format!("staff:{}", staff.username),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": token, "scopes": scopes.names() })),
    ))
}

/// A JSON body that may be absent (the actions that need none).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiFailure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiFailure(Error::Invalid {
            field: "body",
            // Not serde's words: they may quote a value (a password).
            reason: format!(
                "not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    })
}

/// A staff account as admins see it.
#[derive(Serialize, ToSchema)]
pub struct AccountOut {
    username: String,
    display_name: String,
    outlet: String,
    role: String,
    disabled: bool,
    /// A role grant waiting for a second admin: who asked, and the role.
    grant_requested_by: Option<String>,
    grant_role: Option<String>,
}

/// The staff accounts (admins; a signed-in session's token).
#[utoipa::path(get, path = "/api/v1/staff", responses((status = 200, body = [AccountOut]), (status = 403, body = ApiError)))]
async fn staff_list(
    State(s): State<Shared>,
    Staff(staff): Staff,
) -> Result<Json<Vec<AccountOut>>, ApiFailure> {
    let list = ra::accounts(s.auth.store(), &staff).await?;
    Ok(Json(
        list.into_iter()
            .map(|a| AccountOut {
                username: a.username,
                display_name: a.display_name,
                outlet: a.outlet,
                role: a.role,
                disabled: a.disabled,
                grant_requested_by: a.grant_requested_by,
                grant_role: a.grant_role,
            })
            .collect(),
    ))
}

/// A new member of staff.
#[derive(Deserialize, ToSchema)]
pub struct NewAccount {
    username: String,
    display_name: String,
    outlet: String,
    /// clerk, supervisor, officer, admin, operator, auditor or data_owner.
    role: String,
    /// The initial password (12 characters at least).
    password: String,
}

/// The new member's authenticator enrolment, shown once.
#[derive(Serialize, ToSchema)]
pub struct Enrolment {
    username: String,
    /// Base32.
    totp_secret: String,
    otpauth: String,
    /// A privileged role waits for a second admin: the account stays disabled until then.
    grant_waits: bool,
}

/// Adds a member of staff (admins): the same rules as `/staff/admin` — a privileged role
/// (admin, officer, auditor, data owner) waits for a second admin.
#[utoipa::path(post, path = "/api/v1/staff", request_body = NewAccount,
    responses((status = 201, body = Enrolment), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
async fn staff_add(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<NewAccount>,
) -> Result<(StatusCode, Json<Enrolment>), ApiFailure> {
    let password = zeroize::Zeroizing::new(b.password);
    let role = ra::Role::parse(&b.role)?;
    let vault = s.auth.staff_keys();
    let new = ra::NewStaff {
        username: b.username.trim(),
        display_name: b.display_name.trim(),
        outlet: b.outlet.trim(),
        role,
        password: &password,
    };
    let (_, secret, grant_waits) = ra::add_account(s.auth.store(), &vault, &staff, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(Enrolment {
            username: new.username.to_string(),
            totp_secret: ca_core::totp::secret_base32(&secret),
            otpauth: ca_core::totp::otpauth_uri("ecert", new.username, &secret),
            grant_waits,
        }),
    ))
}

/// A change to an account.
#[derive(Deserialize, ToSchema, Default)]
pub struct StaffChange {
    /// `role`: the new role.
    #[serde(default)]
    role: String,
    /// `password`: the temporary password (the member chooses a new one at next sign-in).
    #[serde(default)]
    password: String,
}

/// Changes an account (admins): `disable`, `enable`, `approve` (a waiting role grant, by a
/// second admin), `role`, `password` (reset), `totp` (a new authenticator secret, returned),
/// `revoke-tokens`. (An admin never makes a token for someone else: it would let them act as
/// that member.)
#[utoipa::path(post, path = "/api/v1/staff/{username}/{action}", params(("username" = String, Path), ("action" = String, Path)),
    request_body = StaffChange,
    responses((status = 200, body = Object), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
async fn staff_change(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path((username, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let b: StaffChange = optional_json(&body)?;
    let store = s.auth.store();
    let done = match action.as_str() {
        "disable" => {
            ra::set_disabled(store, &staff, &username, true).await?;
            serde_json::json!({ "username": username, "disabled": true })
        }
        "enable" => {
            ra::set_disabled(store, &staff, &username, false).await?;
            serde_json::json!({ "username": username, "disabled": false })
        }
        "approve" => {
            ra::approve_grant(store, &staff, &username).await?;
            serde_json::json!({ "username": username, "granted": true })
        }
        "role" => {
            let waits = ra::change_role(store, &staff, &username, &b.role).await?;
            serde_json::json!({ "username": username, "role": b.role, "grant_waits": waits })
        }
        "password" => {
            let password = zeroize::Zeroizing::new(b.password);
            ra::reset_password(store, &staff, &username, &password).await?;
            serde_json::json!({ "username": username, "password_reset": true })
        }
        "revoke-tokens" => {
            staff.authorize(ra::Action::ManageStaff)?;
            let n = ra::revoke_api_tokens(store, &username, &format!("staff:{}", staff.username))
                .await?;
            serde_json::json!({ "username": username, "revoked": n })
        }
        "totp" => {
            let vault = s.auth.staff_keys();
            let secret = ra::new_totp(store, &vault, &staff, &username).await?;
            serde_json::json!({
                "username": username,
                "totp_secret": ca_core::totp::secret_base32(&secret),
                "otpauth": ca_core::totp::otpauth_uri("ecert", &username, &secret),
            })
        }
        _ => return Err(ApiFailure(Error::NotFound)),
    };
    Ok(Json(done))
}

/// An outlet.
#[derive(Serialize, ToSchema)]
pub struct OutletOut {
    id: String,
    name_en: String,
    name_zh: String,
    closed: bool,
}

/// Every outlet, closed ones too (admins).
#[utoipa::path(get, path = "/api/v1/outlets", responses((status = 200, body = [OutletOut]), (status = 403, body = ApiError)))]
async fn outlet_list(
    State(s): State<Shared>,
    Staff(staff): Staff,
) -> Result<Json<Vec<OutletOut>>, ApiFailure> {
    let list = ra::all_outlets(s.auth.store(), &staff).await?;
    Ok(Json(
        list.into_iter()
            .map(|(id, name_en, name_zh, closed)| OutletOut {
                id,
                name_en,
                name_zh,
                closed,
            })
            .collect(),
    ))
}

/// A new outlet, or new names for one.
#[derive(Deserialize, ToSchema, Default)]
pub struct OutletIn {
    /// Lowercase letters, digits and dashes (new outlets).
    #[serde(default)]
    id: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    name_zh: String,
}

/// Adds an outlet (admins).
#[utoipa::path(post, path = "/api/v1/outlets", request_body = OutletIn,
    responses((status = 201, body = Object), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
async fn outlet_add(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<OutletIn>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiFailure> {
    ra::add_outlet(
        s.auth.store(),
        &staff,
        b.id.trim(),
        b.name_en.trim(),
        b.name_zh.trim(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": b.id.trim() })),
    ))
}

/// Renames (`rename`, with both names) or closes (`close`) an outlet (admins).
#[utoipa::path(post, path = "/api/v1/outlets/{id}/{action}", params(("id" = String, Path), ("action" = String, Path)),
    request_body = OutletIn,
    responses((status = 200, body = Object), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn outlet_change(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    let b: OutletIn = optional_json(&body)?;
    let store = s.auth.store();
    match action.as_str() {
        "rename" => {
            ra::change_outlet(
                store,
                &staff,
                &id,
                Some((b.name_en.trim(), b.name_zh.trim())),
            )
            .await?
        }
        "close" => ra::change_outlet(store, &staff, &id, None).await?,
        _ => return Err(ApiFailure(Error::NotFound)),
    }
    Ok(Json(serde_json::json!({ "id": id, "done": action })))
}

/// A member's sign-in for the command line (`ecert login`).
#[derive(Deserialize, ToSchema)]
pub struct SignIn {
    username: String,
    password: String,
    /// The authenticator's current code.
    code: String,
}

/// A command-line session: a bearer token for 12 hours.
#[derive(Serialize, ToSchema)]
pub struct SessionOut {
    token: String,
    /// Unix seconds.
    expires_at: i64,
    role: String,
}

/// Signs a member in for the command line (password and TOTP code; the sign-in page's
/// lockouts, rate limit and audit) and returns a bearer token for 12 hours. What the token may
/// do is the member's role's row of the permission matrix.
#[utoipa::path(post, path = "/api/v1/session", request_body = SignIn,
    responses((status = 201, body = SessionOut), (status = 401, body = ApiError), (status = 429, body = ApiError)),
    security(()))]
async fn session_create(
    State(s): State<Shared>,
    super::ClientIp(ip): super::ClientIp,
    Json(b): Json<SignIn>,
) -> Result<(StatusCode, Json<SessionOut>), ApiFailure> {
    // The sign-in page's limit, in its own bucket.
    s.limits
        .check("api-sign-in", ip, 10)
        .map_err(|e| ApiFailure(e.error))?;
    let password = zeroize::Zeroizing::new(b.password);
    let source = super::bucket(ip).to_string();
    let c = ra::cli_sign_in(
        &s.auth,
        b.username.trim(),
        &password,
        b.code.trim(),
        &source,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionOut {
            token: c.token,
            expires_at: c.expires_at,
            role: c.role.name().to_string(),
        }),
    ))
}

/// Ends the command-line session of the bearer token (`ecert logout`).
#[utoipa::path(delete, path = "/api/v1/session", responses((status = 204), (status = 401, body = ApiError)))]
async fn session_end(
    State(s): State<Shared>,
    Staff(staff): Staff,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiFailure> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    ra::cli_sign_out(s.auth.store(), &staff, &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A decision two officers take together (issue 14): what the first officer proposes.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Proposal {
    /// `mass_revocation`, `key_block` or `ca_revocation`.
    kind: String,
    /// RFC 5280 reason name for revocations; free text for a key block.
    #[serde(default)]
    reason: String,
    /// Mass revocation: serials (hex) ...
    #[serde(default)]
    serials: Vec<String>,
    /// ... and/or the unrevoked certificates of a profile ...
    profile: Option<String>,
    /// ... issued at or after (RFC 3339) ...
    issued_after: Option<String>,
    /// ... and at or before (RFC 3339).
    issued_before: Option<String>,
    /// Key block: the key of this certificate (serial, hex) ...
    serial: Option<String>,
    /// ... or this public key (PEM).
    public_key: Option<String>,
    /// CA revocation: `individual` or `server`.
    ca: Option<String>,
    /// Batch approval: the batch's id.
    batch: Option<String>,
    /// Standing authorisation: the organisation's id ...
    organisation: Option<String>,
    /// ... the most good rows approved on arrival in any 24 hours ...
    max_rows: Option<i64>,
    /// ... for this many days (at most 365; 0 withdraws it).
    days: Option<u32>,
}

/// A proposal and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProposalOut {
    id: String,
    kind: String,
    /// What it does, in one line.
    summary: String,
    proposed_by: String,
    proposed_at: i64,
    expires_at: i64,
    /// `pending`, `confirming`, `done`, `failed` or `withdrawn`.
    state: String,
    decided_by: Option<String>,
    outcome: Option<String>,
    /// Exactly what it does: `serials` and `reason`; `key_sha256` and `reason`; `ca` and
    /// `reason`. What the second officer confirms.
    #[schema(value_type = Object)]
    params: serde_json::Value,
}

impl From<ra::ProposalView> for ProposalOut {
    fn from(v: ra::ProposalView) -> Self {
        ProposalOut {
            id: v.id,
            kind: v.kind,
            summary: v.summary,
            proposed_by: v.proposed_by,
            proposed_at: v.proposed_at,
            expires_at: v.expires_at,
            state: v.state,
            decided_by: v.decided_by,
            outcome: v.outcome,
            params: serde_json::from_str(&v.params).unwrap_or_default(),
        }
    }
}

fn rfc3339_field(field: &'static str, v: Option<&str>) -> Result<Option<i64>, ApiFailure> {
    v.map(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| {
                ApiFailure(Error::Invalid {
                    field,
                    reason: "an RFC 3339 time, e.g. 2026-11-01T00:00:00Z".into(),
                })
            })
    })
    .transpose()
}

/// Pending proposals and recent decided ones (officers).
#[utoipa::path(get, path = "/api/v1/officer-proposals",
    responses((status = 200, body = [ProposalOut]), (status = 403, body = ApiError)))]
async fn officer_proposals(
    State(s): State<Shared>,
    Staff(staff): Staff,
) -> Result<Json<Vec<ProposalOut>>, ApiFailure> {
    let list = ra::officer::proposals(&s.auth, &staff).await?;
    Ok(Json(list.into_iter().map(ProposalOut::from).collect()))
}

/// Proposes a mass revocation, a key block or an issuing CA's revocation; another officer
/// confirms it (`/confirm`) before anything is done.
#[utoipa::path(post, path = "/api/v1/officer-proposals", request_body = Proposal,
    responses((status = 201, body = ProposalOut), (status = 422, body = ApiError)))]
async fn officer_propose(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<Proposal>,
) -> Result<(StatusCode, Json<ProposalOut>), ApiFailure> {
    let r = ra::ProposalRequest {
        issued_after: rfc3339_field("issued_after", b.issued_after.as_deref())?,
        issued_before: rfc3339_field("issued_before", b.issued_before.as_deref())?,
        kind: b.kind,
        reason: b.reason,
        serials: b.serials,
        profile: b.profile,
        serial: b.serial,
        public_key: b.public_key,
        ca: b.ca,
        batch: b.batch,
        organisation: b.organisation,
        max_rows: b.max_rows,
        days: b.days,
    };
    let v = ra::officer::propose(&s.auth, &staff, &r).await?;
    Ok((StatusCode::CREATED, Json(v.into())))
}

/// A second officer confirms a proposal: it is carried out now.
#[utoipa::path(post, path = "/api/v1/officer-proposals/{id}/confirm", params(("id" = String, Path)),
    responses((status = 200, body = ProposalOut), (status = 403, body = ApiError), (status = 409, body = ApiError)))]
async fn officer_confirm(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<ProposalOut>, ApiFailure> {
    Ok(Json(
        ra::officer::confirm(&s.auth, &staff, &id).await?.into(),
    ))
}

/// Withdraws a pending proposal.
#[utoipa::path(post, path = "/api/v1/officer-proposals/{id}/withdraw", params(("id" = String, Path)),
    responses((status = 200, body = ProposalOut), (status = 409, body = ApiError)))]
async fn officer_withdraw(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<ProposalOut>, ApiFailure> {
    Ok(Json(
        ra::officer::withdraw(&s.auth, &staff, &id).await?.into(),
    ))
}

/// The `pii` token's user PIN (issue 14, custody).
#[derive(Deserialize, ToSchema)]
pub struct Activation {
    pin: String,
}

/// The personal-data keys are open in this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activated {
    /// `activated`.
    status: &'static str,
}

/// Activates the personal-data keys of this instance: the `data_owner` role, with a token of
/// scope `activate` and the `pii` token's PIN. Audited, never with the PIN; a wrong PIN is 422.
#[utoipa::path(post, path = "/api/v1/personal-data/activate", request_body = Activation,
    responses((status = 200, body = Activated), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
async fn personal_data_activate(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<Activation>,
) -> Result<Json<Activated>, ApiFailure> {
    let pin = zeroize::Zeroizing::new(b.pin);
    ra::activate_personal_data(&s.auth, &staff, &pin).await?;
    Ok(Json(Activated {
        status: "activated",
    }))
}

/// Approve or reject a version of the application.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionRequest {
    version: i64,
    /// `approve` or `reject`.
    decision: String,
    #[serde(default)]
    reason: String,
}

/// What the decision led to.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionResult {
    /// `issued`, `awaiting_second_approval` or `rejected`.
    outcome: &'static str,
    /// The certificate's serial, when issued.
    serial: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/applications/{id}/decision", params(("id" = String, Path)), request_body = DecisionRequest,
    responses((status = 200, body = DecisionResult), (status = 409, body = ApiError)))]
async fn decision(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<DecisionRequest>,
) -> Result<Json<DecisionResult>, ApiFailure> {
    let d = match b.decision.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject(b.reason),
        _ => {
            return Err(ApiFailure(Error::Invalid {
                field: "decision",
                reason: "approve or reject".into(),
            }))
        }
    };
    Ok(Json(
        match ra::decide(&s.auth, &staff, &id, b.version, d).await? {
            Decided::Issued {
                serial,
                email,
                reference,
            } => {
                if let Err(e) = s
                    .mailer
                    .send(
                        &email,
                        &format!("e-Cert: {reference} issued"),
                        &format!("Reference: {reference}\nStatus: issued\n"),
                    )
                    .await
                {
                    tracing::error!(reference, error = %e, "could not send the issuance notice");
                }
                DecisionResult {
                    outcome: "issued",
                    serial: Some(serial),
                }
            }
            Decided::AwaitingSecond => DecisionResult {
                outcome: "awaiting_second_approval",
                serial: None,
            },
            Decided::Rejected { .. } => DecisionResult {
                outcome: "rejected",
                serial: None,
            },
        },
    ))
}

#[utoipa::path(get, path = "/api/v1/applications/{id}/certificate", params(("id" = String, Path)),
    responses((status = 200, description = "PEM certificate", content_type = "application/x-pem-file"), (status = 409, body = ApiError)))]
async fn certificate(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let der = ra::staff_certificate(s.auth.store(), &staff, &id).await?;
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// A certificate's status change, by serial (`ecert revoke`): a `reason`, or `release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequest {
    /// RFC 5280 reason name: `unspecified`, `keyCompromise`, `affiliationChanged`,
    /// `superseded`, `cessationOfOperation`, `privilegeWithdrawn` or `certificateHold` (a hold:
    /// Individual & Organisational CA only). Required unless `release`.
    #[serde(default)]
    reason: Option<String>,
    /// Release a hold instead.
    #[serde(default)]
    release: bool,
    /// The certificate (PEM), to revoke one this CA signed that its database does not hold —
    /// issued after the backup the CA was restored from (docs/OPERATIONS.md "Backup and
    /// restore"). Officers only (CA-level staff who may revoke); a revocation, never a hold.
    #[serde(default)]
    certificate: Option<String>,
}

/// One certificate a status change reached (the renewal chain is walked).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangedCertificate {
    serial: String,
    /// `revoked`, `reason_updated`, `held` or `released`.
    outcome: &'static str,
    /// The reason now recorded (none after a release).
    reason: Option<&'static str>,
}

/// What a status change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusChanged {
    changed: Vec<ChangedCertificate>,
}

/// Revokes, holds or releases a certificate as the member (`Revoke` in docs/ROLES.md: counter
/// staff reach their outlet's applications' certificates, officers every subscriber
/// certificate); token scope `decide`. Audited; the CRLs and OCSP follow within seconds. A
/// revocation of many is a two-officer decision (`/api/v1/officer-proposals`), not a loop here.
#[utoipa::path(post, path = "/api/v1/certificates/{serial}/revocation", params(("serial" = String, Path)), request_body = StatusChangeRequest,
    responses((status = 200, body = StatusChanged), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn certificate_revocation(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(serial): Path<String>,
    Json(b): Json<StatusChangeRequest>,
) -> Result<Json<StatusChanged>, ApiFailure> {
    use ca_core::revocation::{Outcome, Reason};
    // Nothing is revoked by default: an empty or misspelt body is refused, not `unspecified`.
    let change = match (b.release, b.reason.as_deref()) {
        (true, None) => ra::StatusChange::Release,
        (false, Some(reason)) => ra::StatusChange::Revoke(Reason::parse(reason)?),
        _ => {
            return Err(ApiFailure(Error::Invalid {
                field: "reason",
                reason: "a reason to revoke or hold, or release: true (one of them)".into(),
            }))
        }
    };
    let changed = match (&b.certificate, change) {
        (Some(pem), ra::StatusChange::Revoke(reason)) => {
            ra::revoke_surfaced(&s.auth, &staff, &serial, reason, pem).await?
        }
        (Some(_), ra::StatusChange::Release) => {
            return Err(ApiFailure(Error::Invalid {
                field: "certificate",
                reason: "a certificate the CA does not hold is revoked, never released".into(),
            }))
        }
        (None, change) => ra::change_certificate_status(&s.auth, &staff, &serial, change).await?,
    };
    let mut out = Vec::with_capacity(changed.len());
    for (serial, outcome) in changed {
        let reason = match outcome {
            Outcome::Released => None,
            _ => s
                .auth
                .store()
                .certificate(&serial)
                .await?
                .and_then(|c| c.revocation_reason)
                .and_then(Reason::from_code)
                .map(Reason::name),
        };
        let outcome = match outcome {
            Outcome::Revoked => "revoked",
            Outcome::ReasonUpdated => "reason_updated",
            Outcome::Held => "held",
            Outcome::Released => "released",
        };
        out.push(ChangedCertificate {
            serial,
            outcome,
            reason,
        });
    }
    Ok(Json(StatusChanged { changed: out }))
}

// Certificate Problem Reports (TLS BR and S/MIME BR §4.9.3, §4.9.5; docs/REVOCATION.md).

/// A Certificate Problem Report, from anyone (no token): a relying party, a subscriber, a
/// researcher. Rate-limited per client address.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewProblemReport {
    /// `key_compromise`, `misissuance`, `misuse` or `other`.
    kind: String,
    /// The certificate's serial number, hexadecimal (colons allowed).
    serial: String,
    /// What is wrong (at most 4000 characters).
    description: String,
    /// Where the acknowledgement and the preliminary report go.
    reporter_email: String,
    /// Optional proof of a key compromise: a PEM CSR signed by the certificate's private key.
    /// With it the certificate (and every other with the key) is revoked at once.
    #[serde(default)]
    proof_csr: String,
}

/// What the CA received and promises.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemReportReceived {
    /// The reference quoted in every mail.
    reference: String,
    /// The serials revoked at once (a verified proof of key compromise).
    revoked: Vec<String>,
    /// The preliminary report is due by then (Unix seconds).
    preliminary_due: i64,
    /// The revocation decision is due by then (Unix seconds).
    revocation_due: i64,
}

#[utoipa::path(post, path = "/api/v1/problem-reports", request_body = NewProblemReport, security(()),
    responses((status = 201, body = ProblemReportReceived), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
async fn problem_report(
    State(s): State<Shared>,
    parts: axum::http::request::Parts,
    Json(b): Json<NewProblemReport>,
) -> Result<(StatusCode, Json<ProblemReportReceived>), ApiFailure> {
    let ip = s.client_ip(&parts);
    s.limits
        .check("report", ip, 5)
        .map_err(|e| ApiFailure(e.error))?;
    let got = ra::report_problem(
        &s.auth,
        ra::NewReport {
            kind: b.kind,
            serial: b.serial,
            description: b.description,
            reporter_email: b.reporter_email,
            proof_csr: b.proof_csr.into_bytes(),
            source: ra::source_bucket(ip),
        },
    )
    .await?;
    send_notices(&s, got.notices).await;
    Ok((
        StatusCode::CREATED,
        Json(ProblemReportReceived {
            reference: got.reference,
            revoked: got.revoked,
            preliminary_due: got.preliminary_due,
            revocation_due: got.revocation_due,
        }),
    ))
}

/// A report as a CA officer sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemReport {
    id: String,
    reference: String,
    kind: String,
    serial: String,
    reporter_email: String,
    description: String,
    proof_verified: bool,
    received_at: i64,
    preliminary_due: i64,
    preliminary_at: Option<i64>,
    findings: Option<String>,
    revocation_due: i64,
    decided_at: Option<i64>,
    outcome: Option<String>,
    outcome_note: Option<String>,
    /// `ok`, `nearing` (under 6 hours left) or `overdue`.
    preliminary_clock: &'static str,
    /// `ok`, `nearing` or `overdue`.
    revocation_clock: &'static str,
}

impl From<ra::ReportView> for ProblemReport {
    fn from(v: ra::ReportView) -> Self {
        ProblemReport {
            preliminary_clock: v.preliminary_clock.name(),
            revocation_clock: v.revocation_clock.name(),
            id: v.id,
            reference: v.reference,
            kind: v.kind,
            serial: v.serial,
            reporter_email: v.reporter_email,
            description: v.description,
            proof_verified: v.proof_verified,
            received_at: v.received_at,
            preliminary_due: v.preliminary_due,
            preliminary_at: v.preliminary_at,
            findings: v.findings,
            revocation_due: v.revocation_due,
            decided_at: v.decided_at,
            outcome: v.outcome,
            outcome_note: v.outcome_note,
        }
    }
}

/// The officers' queue: open reports, most urgent first, then the last 50 decided.
#[utoipa::path(get, path = "/api/v1/problem-reports",
    responses((status = 200, body = [ProblemReport]), (status = 403, body = ApiError)))]
async fn problem_reports(
    State(s): State<Shared>,
    Staff(staff): Staff,
) -> Result<Json<Vec<ProblemReport>>, ApiFailure> {
    let rows = ra::report_queue(&s.auth, &staff, now()).await?;
    Ok(Json(rows.into_iter().map(ProblemReport::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/problem-reports/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ProblemReport), (status = 404, body = ApiError)))]
async fn problem_report_show(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<ProblemReport>, ApiFailure> {
    Ok(Json(ra::report(&s.auth, &staff, &id, now()).await?.into()))
}

/// The preliminary report on the findings, sent to the reporter and the subscriber.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Findings {
    findings: String,
}

#[utoipa::path(post, path = "/api/v1/problem-reports/{id}/preliminary", params(("id" = String, Path)), request_body = Findings,
    responses((status = 204), (status = 409, body = ApiError)))]
async fn problem_report_preliminary(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<Findings>,
) -> Result<StatusCode, ApiFailure> {
    let notices = ra::report_preliminary(&s.auth, &staff, &id, &b.findings).await?;
    send_notices(&s, notices).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The outcome: `revoke` with a reason (keyCompromise blocks the key), or `reject`; `note`
/// is sent to the reporter (and the subscriber, for a revocation).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReportDecision {
    /// `revoke` or `reject`.
    outcome: String,
    /// For `revoke`: keyCompromise, affiliationChanged, superseded, cessationOfOperation or
    /// privilegeWithdrawn.
    #[serde(default)]
    reason: String,
    note: String,
}

#[utoipa::path(post, path = "/api/v1/problem-reports/{id}/decision", params(("id" = String, Path)), request_body = ReportDecision,
    responses((status = 200, body = [String]), (status = 409, body = ApiError)))]
async fn problem_report_decision(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<ReportDecision>,
) -> Result<Json<Vec<String>>, ApiFailure> {
    let outcome = match b.outcome.as_str() {
        "revoke" => ra::ReportOutcome::Revoke(
            ca_core::revocation::Reason::parse(&b.reason).map_err(|e| {
                ApiFailure(Error::Invalid {
                    field: "reason",
                    reason: e.to_string(),
                })
            })?,
        ),
        "reject" => ra::ReportOutcome::Reject,
        _ => {
            return Err(ApiFailure(Error::Invalid {
                field: "outcome",
                reason: "revoke or reject".into(),
            }))
        }
    };
    let (revoked, notices) = ra::report_decide(&s.auth, &staff, &id, outcome, &b.note).await?;
    send_notices(&s, notices).await;
    Ok(Json(revoked))
}

/// `GET /api/v1/audit/export?since=&until=&actor=&kind=&serial=&reference=&format=jsonl|csv`:
/// a stretch of the audit chain up to its covering signed checkpoint, for offline
/// verification (`ecert audit verify --export`; docs/AUDIT.md). Auditors and data owners.
#[utoipa::path(get, path = "/api/v1/audit/export",
    params(("since" = Option<String>, Query), ("until" = Option<String>, Query), ("actor" = Option<String>, Query),
        ("kind" = Option<String>, Query), ("serial" = Option<String>, Query), ("reference" = Option<String>, Query),
        ("format" = Option<String>, Query, description = "jsonl (default) or csv")),
    responses((status = 200, description = "the export", content_type = "application/jsonl"), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn audit_export(
    State(s): State<Shared>,
    Staff(staff): Staff,
    axum::extract::Query(q): axum::extract::Query<super::audit_pages::AuditQuery>,
) -> Result<Response, ApiFailure> {
    Ok(super::audit_pages::api_export(&s, &staff, &q).await?)
}

// ------------------------------------------------------------------------------------------
// Bulk enrolment (docs/BULK.md)

/// Who calls a batch route: the organisation by its batch token (`ecb_…`), or a staff member.
enum BatchAuth {
    Organisation(ra::bulk::BatchCaller),
    Staff(StaffSession),
}

impl FromRequestParts<Shared> for BatchAuth {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Error::SignInFailed)?;
        if token.starts_with("ecb_") {
            let ip = s.client_ip(parts);
            s.limits
                .check("api", ip, 600)
                .map_err(|e| ApiFailure(e.error))?;
            return Ok(BatchAuth::Organisation(
                ra::bulk::batch_caller(s.auth.store(), token).await?,
            ));
        }
        let Staff(staff) = Staff::from_request_parts(parts, s).await?;
        Ok(BatchAuth::Staff(staff))
    }
}

/// The organisation of an issued organisational application.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewOrganisation {
    application_id: String,
}

/// A registered organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganisationOut {
    id: String,
}

/// Registers the organisation of an issued organisational application (its registration and
/// representative were checked at the counter) for bulk enrolment. Officers; idempotent.
#[utoipa::path(post, path = "/api/v1/organisations", request_body = NewOrganisation,
    responses((status = 201, body = OrganisationOut), (status = 409, body = ApiError), (status = 404, body = ApiError), (status = 403, body = ApiError)))]
async fn organisation_register(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Json(b): Json<NewOrganisation>,
) -> Result<Response, ApiFailure> {
    let id = ra::bulk::register_organisation(&s.auth, &staff, b.application_id.trim()).await?;
    Ok((StatusCode::CREATED, Json(OrganisationOut { id })).into_response())
}

/// A mail domain to validate.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewDomain {
    domain: String,
}

/// A mail domain of an organisation: where to publish which value, and whether it is
/// validated.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainOut {
    domain: String,
    /// The TXT record's name.
    record: String,
    /// The Random Value to publish there.
    value: String,
    validated: bool,
    /// Why the last check did not validate it.
    problem: Option<String>,
}

impl From<ra::bulk::OrgDomain> for DomainOut {
    fn from(d: ra::bulk::OrgDomain) -> Self {
        DomainOut {
            domain: d.domain,
            record: d.record,
            value: d.value,
            validated: d.validated,
            problem: d.problem,
        }
    }
}

/// An organisation's mail domains.
#[utoipa::path(get, path = "/api/v1/organisations/{id}/domains", params(("id" = String, Path)),
    responses((status = 200, body = [DomainOut]), (status = 404, body = ApiError), (status = 403, body = ApiError)))]
async fn organisation_domains(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Json<Vec<DomainOut>>, ApiFailure> {
    staff.authorize(ra::Action::ManageOrganisations)?;
    let list = ra::bulk::domains(s.auth.store(), &id).await?;
    Ok(Json(list.into_iter().map(DomainOut::from).collect()))
}

/// Adds a mail domain; answers where the organisation publishes which Random Value.
#[utoipa::path(post, path = "/api/v1/organisations/{id}/domains", params(("id" = String, Path)), request_body = NewDomain,
    responses((status = 200, body = DomainOut), (status = 404, body = ApiError), (status = 422, body = ApiError), (status = 403, body = ApiError)))]
async fn organisation_domain_add(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<NewDomain>,
) -> Result<Json<DomainOut>, ApiFailure> {
    Ok(Json(
        ra::bulk::add_domain(&s.auth, &staff, &id, &b.domain)
            .await?
            .into(),
    ))
}

/// Checks the domain's TXT record (DNSSEC, remote perspectives) and records its validation.
#[utoipa::path(post, path = "/api/v1/organisations/{id}/domains/{domain}/validation", params(("id" = String, Path), ("domain" = String, Path)),
    responses((status = 200, body = DomainOut), (status = 404, body = ApiError), (status = 403, body = ApiError)))]
async fn organisation_domain_validate(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<DomainOut>, ApiFailure> {
    Ok(Json(
        ra::bulk::validate_domain(&s.auth, &staff, &id, &domain)
            .await?
            .into(),
    ))
}

/// A batch token to give the organisation.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewBatchToken {
    /// `organisational` and/or `organisational-role`.
    profiles: Vec<String>,
    /// Days it lasts (1 to 366).
    days: u32,
}

/// The batch token (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchTokenOut {
    token: String,
}

/// Gives the organisation a batch token for the profiles named (it must have a validated
/// domain). Officers signed in with their second factor.
#[utoipa::path(post, path = "/api/v1/organisations/{id}/batch-tokens", params(("id" = String, Path)), request_body = NewBatchToken,
    responses((status = 201, body = BatchTokenOut), (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 403, body = ApiError)))]
async fn organisation_batch_token(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
    Json(b): Json<NewBatchToken>,
) -> Result<Response, ApiFailure> {
    let token = ra::bulk::batch_token(&s.auth, &staff, &id, &b.profiles, b.days).await?;
    Ok((StatusCode::CREATED, Json(BatchTokenOut { token })).into_response())
}

/// What a revocation of batch tokens did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchTokensRevokedOut {
    /// Tokens revoked (those in force; 0 if there were none).
    revoked: u64,
    /// The organisation's batches that were waiting for approval, refused.
    batches_refused: u64,
}

/// Revokes every batch token of the organisation still in force (a leaked one: tokens are
/// shown once and not listed, so all go; give the organisation a new one), and refuses its
/// batches still waiting for approval (resubmitted with the new token). Batches already
/// approved go on issuing. Officers signed in with their second factor.
#[utoipa::path(delete, path = "/api/v1/organisations/{id}/batch-tokens", params(("id" = String, Path)),
    responses((status = 200, body = BatchTokensRevokedOut), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn organisation_batch_tokens_revoke(
    State(s): State<Shared>,
    Staff(staff): Staff,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let done = ra::bulk::revoke_batch_tokens(&s.auth, &staff, &id).await?;
    Ok(Json(BatchTokensRevokedOut {
        revoked: done.tokens,
        batches_refused: done.batches_refused,
    })
    .into_response())
}

/// A refused row.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowError {
    /// Its number in the batch, from 1.
    row: usize,
    client_row_id: String,
    /// Why it was refused.
    error: String,
}

/// What the submission did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReceiptOut {
    id: String,
    rows: usize,
    /// Good rows: waiting for the batch's approval by two officers, or queued for issuance
    /// when `approved`.
    accepted: usize,
    /// Rows whose client row id was submitted before: nothing is issued twice.
    duplicates: usize,
    errors: Vec<RowError>,
    /// Approved on arrival by the organisation's standing authorisation.
    approved: bool,
}

/// Submits a batch with the organisation's batch token: JSON lines (one row object per line)
/// or CSV with a header line (`client_row_id,surname,given_name,email,title,profile,csr`,
/// the CSR's line breaks written `\n`). Each row is checked on arrival; the good ones wait
/// for two officers' approval (a `batch_approval` proposal), then are issued.
#[utoipa::path(post, path = "/api/v1/batches", params(BatchQuery),
    request_body(content((BatchSubmission = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))),
    responses((status = 201, body = BatchReceiptOut), (status = 422, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn batch_submit(
    State(s): State<Shared>,
    who: BatchAuth,
    Query(q): Query<BatchQuery>,
    headers: axum::http::HeaderMap,
    body: String,
) -> Result<Response, ApiFailure> {
    let BatchAuth::Organisation(caller) = who else {
        return Err(ApiFailure(Error::Forbidden(
            "a batch is submitted with its organisation's batch token".into(),
        )));
    };
    // The organisation the submitter meant: a batch token of another is refused, unsubmitted.
    if q.organisation
        .as_deref()
        .is_some_and(|o| o != caller.organisation_id)
    {
        return Err(ApiFailure(Error::Forbidden(
            "this batch token is another organisation's".into(),
        )));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let rows = if json {
        // `{"rows": [...]}`: what a client generated from the OpenAPI document sends. A row that
        // does not fit is refused by name, like a JSON line that does not parse.
        let b: BatchSubmission = serde_json::from_str(&body).map_err(|e| {
            ApiFailure(Error::Invalid {
                field: "rows",
                reason: format!("not a batch: {e}"),
            })
        })?;
        b.rows
            .into_iter()
            .map(|v| {
                serde_json::from_value::<ra::bulk::BatchRowIn>(v)
                    .map_err(|e| format!("not a row: {e}"))
            })
            .collect()
    } else {
        ra::bulk::parse_rows(&body)
    };
    let r = ra::bulk::submit_batch(&s.auth, &caller, rows).await?;
    Ok((
        StatusCode::CREATED,
        Json(BatchReceiptOut {
            id: r.id,
            rows: r.rows,
            accepted: r.accepted,
            duplicates: r.duplicates,
            approved: r.approved,
            errors: r
                .errors
                .into_iter()
                .map(|(row, client_row_id, error)| RowError {
                    row,
                    client_row_id,
                    error,
                })
                .collect(),
        }),
    )
        .into_response())
}

/// A batch as JSON (`application/json`): its rows.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchSubmission {
    #[schema(value_type = Vec<BatchRowJson>)]
    rows: Vec<serde_json::Value>,
}

/// One row of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // the schema of what `BatchRowIn` reads
pub struct BatchRowJson {
    /// The organisation's own id of the row (unique per organisation; 1 to 64 characters).
    client_row_id: String,
    surname: String,
    given_name: String,
    /// In a mail domain the organisation validated.
    email: String,
    /// organisational-role only.
    title: Option<String>,
    /// `organisational` (default) or `organisational-role`.
    profile: Option<String>,
    /// PKCS#10, PEM.
    csr: String,
}

/// `?organisation=`: the organisation the batch is meant for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchQuery {
    /// Refused unless it is the batch token's organisation.
    organisation: Option<String>,
}

/// One row of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRowOut {
    row: i64,
    client_row_id: String,
    /// `invalid`, `duplicate`, `pending`, `queued`, `issuing`, `issued` or `failed`.
    state: String,
    serial: Option<String>,
    error: Option<String>,
}

/// A batch: its state, its rows counted by state, and each row.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchStatusOut {
    id: String,
    /// `submitted`, `approved` or `done`.
    state: String,
    counts: std::collections::BTreeMap<String, i64>,
    rows: Vec<BatchRowOut>,
}

fn reader(who: &BatchAuth) -> ra::bulk::BatchReader<'_> {
    match who {
        BatchAuth::Organisation(c) => ra::bulk::BatchReader::Organisation(c),
        BatchAuth::Staff(s) => ra::bulk::BatchReader::Staff(s),
    }
}

/// A batch's progress (its organisation's token, or an officer).
#[utoipa::path(get, path = "/api/v1/batches/{id}", params(("id" = String, Path)),
    responses((status = 200, body = BatchStatusOut), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
async fn batch_show(
    State(s): State<Shared>,
    who: BatchAuth,
    Path(id): Path<String>,
) -> Result<Json<BatchStatusOut>, ApiFailure> {
    let b = ra::bulk::batch_status(s.auth.store(), reader(&who), &id).await?;
    Ok(Json(BatchStatusOut {
        id: b.id,
        state: b.state,
        counts: b.counts,
        rows: b
            .rows
            .into_iter()
            .map(|r| BatchRowOut {
                row: r.row,
                client_row_id: r.client_row_id,
                state: r.state,
                serial: r.serial,
                error: r.error,
            })
            .collect(),
    }))
}

/// The certificates a batch issued, as one PEM bundle in row order (each preceded by a
/// `# client_row_id` comment line).
#[utoipa::path(get, path = "/api/v1/batches/{id}/certificates", params(("id" = String, Path)),
    responses((status = 200, content_type = "application/pem-certificate-chain", body = String), (status = 404, body = ApiError), (status = 401, body = ApiError)))]
async fn batch_certificates(
    State(s): State<Shared>,
    who: BatchAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiFailure> {
    let certs = ra::bulk::batch_certificates(s.auth.store(), reader(&who), &id).await?;
    let mut out = String::new();
    for (client, der) in certs {
        out.push_str(&format!("# {client}\n"));
        out.push_str(&pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "application/pem-certificate-chain")],
        out,
    )
        .into_response())
}

// ------------------------------------------------------------------------------------------
// The public directory (docs/DIRECTORY.md)

/// `?email=`: the one address looked up.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DirectoryQuery {
    /// A mail address, exactly as in the certificate (no wildcard, no prefix).
    email: Option<String>,
}

/// A published certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryEntry {
    serial: String,
    /// Unix seconds.
    not_after: i64,
    /// PEM.
    certificate: String,
}

/// **No token**: the certificates published for one exact address — issued, unrevoked,
/// unexpired, and published by their holders' choice. A miss is an empty list (200). Rate
/// limited per client (30 a minute).
#[utoipa::path(get, path = "/api/v1/directory", params(DirectoryQuery), security(()),
    responses((status = 200, body = [DirectoryEntry]), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
async fn directory(
    State(s): State<Shared>,
    super::ClientIp(ip): super::ClientIp,
    Query(q): Query<DirectoryQuery>,
) -> Result<Json<Vec<DirectoryEntry>>, ApiFailure> {
    let list = super::directory_lookup(&s, ip, q.email.as_deref().unwrap_or_default()).await?;
    Ok(Json(
        list.into_iter()
            .map(|(serial, der, not_after)| DirectoryEntry {
                serial,
                not_after,
                certificate: pem::encode_config(
                    &pem::Pem::new("CERTIFICATE", der),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                ),
            })
            .collect(),
    ))
}

/// Why the organisation revokes a certificate of its staff.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RowRevocation {
    /// `affiliationChanged`, `superseded`, `cessationOfOperation`, `keyCompromise`,
    /// `unspecified`, or `certificateHold` (a suspension the organisation can release).
    reason: String,
}

/// The certificate revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowRevoked {
    serial: String,
}

/// The organisation, with its batch token, revokes the certificate it had issued for one of its
/// rows (by client row id): a member of staff who left (`affiliationChanged`), a lost key
/// (`keyCompromise`, on its word: this certificate only, until an officer confirms). CRLs and
/// OCSP follow within seconds.
#[utoipa::path(post, path = "/api/v1/staff-certificates/{client_row_id}/revocation", params(("client_row_id" = String, Path)),
    request_body = RowRevocation,
    responses((status = 200, body = RowRevoked), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn staff_certificate_revocation(
    State(s): State<Shared>,
    who: BatchAuth,
    Path(client_row_id): Path<String>,
    Json(b): Json<RowRevocation>,
) -> Result<Json<RowRevoked>, ApiFailure> {
    let BatchAuth::Organisation(caller) = who else {
        return Err(ApiFailure(Error::Forbidden(
            "an organisation revokes its staff's certificates with its batch token; staff use /api/v1/certificates/{serial}/revocation".into(),
        )));
    };
    let reason = ca_core::revocation::Reason::parse(&b.reason)?;
    let serial = ra::bulk::revoke_row(&s.auth, &caller, &client_row_id, reason).await?;
    Ok(Json(RowRevoked { serial }))
}

/// An organisation's certificate for one of its rows, with its status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffCertificate {
    serial: String,
    /// `good`, `revoked` or `held`.
    status: String,
    /// The revocation reason (`certificateHold` when held).
    reason: Option<String>,
    /// PEM.
    certificate: String,
}

fn batch_organisation(who: BatchAuth) -> Result<ra::bulk::BatchCaller, ApiFailure> {
    match who {
        BatchAuth::Organisation(caller) => Ok(caller),
        BatchAuth::Staff(_) => Err(ApiFailure(Error::Forbidden(
            "an organisation reaches its staff's certificates by client row id with its batch token; staff use /api/v1/certificates/{serial}".into(),
        ))),
    }
}

/// The organisation downloads the certificate it had issued for one of its rows, by client row
/// id, with its status (another organisation's row is 404).
#[utoipa::path(get, path = "/api/v1/staff-certificates/{client_row_id}", params(("client_row_id" = String, Path)),
    responses((status = 200, body = StaffCertificate), (status = 404, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn staff_certificate_show(
    State(s): State<Shared>,
    who: BatchAuth,
    Path(client_row_id): Path<String>,
) -> Result<Json<StaffCertificate>, ApiFailure> {
    let caller = batch_organisation(who)?;
    let c = ra::bulk::row_certificate(s.auth.store(), &caller, &client_row_id).await?;
    Ok(Json(StaffCertificate {
        serial: c.serial,
        status: c.status.to_string(),
        reason: c.reason,
        certificate: pem::encode_config(
            &pem::Pem::new("CERTIFICATE", c.der),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ),
    }))
}

/// The organisation releases the hold it placed (`certificateHold`) on one of its rows'
/// certificates; a hold an officer placed is an officer's to release (403).
#[utoipa::path(post, path = "/api/v1/staff-certificates/{client_row_id}/release", params(("client_row_id" = String, Path)),
    responses((status = 200, body = RowRevoked), (status = 404, body = ApiError), (status = 409, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
async fn staff_certificate_release(
    State(s): State<Shared>,
    who: BatchAuth,
    Path(client_row_id): Path<String>,
) -> Result<Json<RowRevoked>, ApiFailure> {
    let caller = batch_organisation(who)?;
    let serial = ra::bulk::release_row(&s.auth, &caller, &client_row_id).await?;
    Ok(Json(RowRevoked { serial }))
}
