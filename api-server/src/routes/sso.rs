//! Browser sign-in through an identity provider (`auth::sso` holds the flow's rules):
//! `GET {prefix}oauth_login/{provider}?next=` begins it (a sealed flow cookie, then the
//! provider's sign-in page), `GET {prefix}oauth_callback/` ends it (the answer checked against
//! the cookie, the code exchanged, a session cookie, back to `next`). Every refusal is a page
//! saying what went wrong, and no session is made.

use axum::extract::{Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::AppState;
use super::misc::forwarded_https;
use super::ui::{html_escape, login_next, off_site, origin, page, redirect, session_set_cookie};
use crate::app::App;
use crate::auth::sso::{Callback, FLOW_COOKIE, FLOW_SECONDS, Flow, ProviderKind, Refusal};

#[derive(serde::Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET {prefix}oauth_login/{provider}`: to the provider's sign-in page.
pub async fn oauth_login(
    State(app): AppState,
    Path(provider): Path<String>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(kind) = ProviderKind::from_id(&provider)
        .filter(|k| app.auth.sso.providers().iter().any(|(p, _)| p == k))
    else {
        return page(
            StatusCode::NOT_FOUND,
            "Not signed in",
            "<p>This server offers no sign-in with that provider.</p>",
        );
    };
    let Some(next) = login_next(&app, q.next, &headers) else {
        return off_site();
    };
    let now = jiff::Timestamp::now().as_second();
    let callback = format!("{}{}oauth_callback/", origin(&headers), app.prefix);
    let flow = Flow::begin(kind, &next, &callback, now, crate::auth::sso::random_token);
    let to = match app
        .auth
        .sso
        .authorize_url(&flow, app.auth.oidc.as_ref())
        .await
    {
        Ok(u) => u,
        Err(e) => return refused(&app, &e, StatusCode::BAD_GATEWAY),
    };
    let mut resp = redirect(&to);
    // `Lax`: the provider sends the browser back with a top-level GET from its own site.
    set_cookie(
        &mut resp,
        &format!(
            "{FLOW_COOKIE}={}; Path={}; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECONDS}{}",
            flow.seal(app.auth.signer.key()),
            app.prefix,
            secure(&headers)
        ),
    );
    resp
}

/// `GET {prefix}oauth_callback/`: the provider's answer.
pub async fn oauth_callback(
    State(app): AppState,
    Query(answer): Query<Callback>,
    headers: HeaderMap,
) -> Response {
    let now = jiff::Timestamp::now().as_second();
    let flow = crate::auth::login::cookie(&headers, FLOW_COOKIE)
        .and_then(|v| Flow::open(v, app.auth.signer.key(), now));
    let issuer = match flow.as_ref().map(|f| f.provider) {
        Some(ProviderKind::Oidc) => app.auth.oidc.as_ref().map(|o| o.issuer()),
        _ => None,
    };
    let mut resp = match finish(&app, flow.as_ref(), &answer, issuer, now).await {
        Ok((next, cookie)) => {
            let mut resp = redirect(&next);
            set_cookie(&mut resp, &cookie);
            resp
        }
        Err(e) => {
            tracing::info!(reason = %e, "a browser sign-in was refused");
            let status = match e {
                Refusal::Exchange(_) => StatusCode::BAD_GATEWAY,
                Refusal::Provider(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            refused(&app, &e, status)
        }
    };
    // The flow is over either way.
    set_cookie(
        &mut resp,
        &format!(
            "{FLOW_COOKIE}=; Path={}; HttpOnly; SameSite=Lax; Max-Age=0",
            app.prefix
        ),
    );
    resp
}

/// The place to go next and the session cookie of a sign-in the provider vouched for.
async fn finish(
    app: &App,
    flow: Option<&Flow>,
    answer: &Callback,
    issuer: Option<&str>,
    now: i64,
) -> Result<(String, String), Refusal> {
    let code = crate::auth::sso::check_callback(flow, answer, issuer)?;
    let flow = flow.expect("checked");
    // Spent before the exchange: two uses of one answer cannot both get through.
    if !app.auth.sso.spend(flow, now) {
        return Err(Refusal::Replayed);
    }
    let who = app
        .auth
        .sso
        .identify(flow, &code, app.auth.oidc.as_ref(), now)
        .await?;
    tracing::info!(user = %who.username, provider = flow.provider.id(), groups = ?who.groups, "signed in");
    let token = app
        .auth
        .provider_session_token(&who.username, flow.provider.id(), who.groups, now);
    // The redirect URI says whether the browser speaks https to us.
    let cookie = session_set_cookie(app, &token, flow.redirect_uri.starts_with("https:"));
    Ok((flow.next.clone(), cookie))
}

fn refused(app: &App, e: &Refusal, status: StatusCode) -> Response {
    page(
        status,
        "Not signed in",
        &format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"{}login/\">Sign in again</a></p>",
            html_escape(&e.to_string()),
            app.prefix
        ),
    )
}

fn secure(headers: &HeaderMap) -> &'static str {
    if forwarded_https(headers) {
        "; Secure"
    } else {
        ""
    }
}

fn set_cookie(resp: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
}
