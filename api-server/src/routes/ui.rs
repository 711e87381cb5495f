//! The web pages: conda-store-ui (the upstream React UI; its built bundle is installed beside
//! this binary, `--ui-dir`, never kept in this repository) at `{prefix}ui/`, every sub-path
//! answered with its page so the browser router can take over; `{prefix}` redirecting there, as
//! conda-store-server does; and the sign-in and sign-out pages.
//!
//! **Sign-in.** `GET {prefix}login/` is a form for the users file. Its POST carries a CSRF
//! token that must match a `SameSite=Strict` cookie set with the form (double submit): another
//! site can neither read the token nor send the cookie, so it cannot sign a visitor in as
//! someone else. JSON logins (the `conda-store` client's) need no token: a cross-site page
//! cannot send a JSON body without a preflight that this server never answers.
//!
//! **Redirects.** `next` is followed only to this site: a path, or a URL of this origin (the
//! UI sends the page's full URL). The origin is the request's own, as the proxy in front saw
//! it (`X-Forwarded-Proto`, `X-Forwarded-Host`). Anything else is refused with a page, before
//! any session is made.

use std::collections::HashMap;
use std::path::Path;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::misc::forwarded_https;
use super::{AppState, read_body};
use crate::app::App;
use crate::auth::login::COOKIE_NAME;

/// The cookie that carries the sign-in form's CSRF token.
pub const CSRF_COOKIE: &str = "conda-store-csrf";

/// The bundle's files, read once at start: (bytes, content type) by file name.
pub struct UiAssets {
    files: HashMap<&'static str, (Bytes, &'static str)>,
}

impl UiAssets {
    /// The files of the bundle in `dir` (`main.js`, `main.css`, the licence); `None` when the
    /// directory holds no bundle (the UI is then a page saying so).
    pub fn load(dir: &Path) -> std::io::Result<Option<UiAssets>> {
        if !dir.join("main.js").is_file() {
            return Ok(None);
        }
        let mut files = HashMap::new();
        for (name, kind) in [
            ("main.js", "text/javascript; charset=utf-8"),
            ("main.css", "text/css; charset=utf-8"),
            ("main.js.LICENSE.txt", "text/plain; charset=utf-8"),
        ] {
            let path = dir.join(name);
            if path.is_file() {
                files.insert(name, (Bytes::from(std::fs::read(&path)?), kind));
            }
        }
        Ok(Some(UiAssets { files }))
    }
}

/// `scheme://host` of this server as the browser sees it.
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let scheme = if forwarded_https(headers) {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get("host"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// Where `next` may send the browser: a path of this site, or a URL of this origin (as a
/// path). `None` for anything else (another site, `//host`, a scheme, control characters).
pub fn safe_next(next: &str, origin: &str) -> Option<String> {
    if next.is_empty() || next.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    let path = if let Some(rest) = next.strip_prefix(origin) {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None; // `http://host.evil.example` shares the prefix `http://host`
        }
        if rest.is_empty() { "/" } else { rest }
    } else {
        next
    };
    (path.starts_with('/') && !path.starts_with("//")).then(|| path.to_string())
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal safe inside a `<script>` element.
fn js_string(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
}

/// An HTML answer that no cache keeps (pages carry per-request tokens and origins).
fn html_response(status: StatusCode, html: String) -> Response {
    let mut resp = (status, html).into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{} - conda-store</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}\
         label,input,button{{display:block;width:100%;margin:.4rem 0}}input{{padding:.4rem}}\
         button{{padding:.5rem;margin-top:1rem}}a.provider{{display:block;text-align:center;\
         padding:.6rem;margin:.6rem 0;border:1px solid #2e7d32;border-radius:4px;color:#2e7d32;\
         text-decoration:none}}.or{{text-align:center;color:#666;margin-top:1.5rem}}.error{{color:#b00020}}</style></head>\
         <body><h1>{}</h1>{body}</body></html>\n",
        html_escape(title),
        html_escape(title)
    );
    html_response(status, html)
}

pub(crate) fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `{prefix}`: to the UI.
pub async fn root(State(app): AppState) -> Response {
    redirect(&format!("{}ui/", app.prefix))
}

/// `{prefix}ui/...`: the UI's page, configured for this server; anonymous visitors of a
/// deployment that gives anonymous callers nothing are sent to sign in first.
pub async fn ui_page(State(app): AppState, headers: HeaderMap, uri: Uri) -> Response {
    let origin = origin(&headers);
    let prefix = &app.prefix;
    let signed_in = matches!(app.auth.caller(&headers).await, Ok(c) if c.username.is_some());
    if !signed_in && app.auth.anonymous_bindings.is_empty() {
        // The router nests the API under the prefix and strips it from `uri`.
        let here = format!("{origin}{}{}", prefix.trim_end_matches('/'), uri.path());
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return redirect(&format!("{prefix}login/?next={next}"));
    }
    if app.ui.is_none() {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The web UI is not installed",
            "<p>This deployment's image has no conda-store-ui bundle (<code>--ui-dir</code>). \
             The REST API works.</p>",
        );
    }
    let config = [
        ("REACT_APP_AUTH_METHOD", "cookie".to_string()),
        ("REACT_APP_AUTH_TOKEN", String::new()),
        ("REACT_APP_STYLE_TYPE", "green-accent".into()),
        ("REACT_APP_SHOW_AUTH_BUTTON", "true".into()),
        ("REACT_APP_API_URL", format!("{origin}{prefix}")),
        (
            "REACT_APP_LOGIN_PAGE_URL",
            format!("{origin}{prefix}login/?next="),
        ),
        (
            "REACT_APP_LOGOUT_PAGE_URL",
            format!("{origin}{prefix}logout/?next=/"),
        ),
        ("REACT_APP_ROUTER_TYPE", "browser".into()),
        ("REACT_APP_URL_BASENAME", format!("{prefix}ui")),
    ];
    let config: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("      {k}: {},", js_string(v)))
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>conda-store</title>\n    \
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n    <script>\n    \
         window.condaStoreConfig = {{\n{}\n    }};\n    </script>\n    \
         <script defer src=\"{prefix}static/conda-store-ui/main.js\"></script>\n    \
         <link href=\"{prefix}static/conda-store-ui/main.css\" rel=\"stylesheet\">\n  </head>\n  \
         <body></body>\n</html>\n",
        config.join("\n")
    );
    let status = if uri.path().ends_with("not-found") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    html_response(status, html)
}

/// `{prefix}static/conda-store-ui/{file}`: the bundle's files, by name only.
pub async fn asset(
    State(app): AppState,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    match app.ui.as_ref().and_then(|u| u.files.get(file.as_str())) {
        Some((bytes, kind)) => {
            let mut resp = bytes.clone().into_response();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            // The bundle changes only with the image: a day, then revalidated by a reload.
            resp.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            resp
        }
        None => page(StatusCode::NOT_FOUND, "Not found", "<p>No such file.</p>"),
    }
}

fn new_csrf_token() -> String {
    let mut raw = [0u8; 24];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn login_form(
    app: &App,
    https: bool,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = new_csrf_token();
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let next_q: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    // A button per identity provider; the password form when there is a users file (or no
    // provider at all, so the page never offers nothing).
    let providers = app.auth.sso.providers();
    let buttons: String = providers
        .iter()
        .map(|(kind, display)| {
            format!(
                "<a class=\"provider\" href=\"{}oauth_login/{}/?next={}\">Sign in with {}</a>",
                app.prefix,
                kind.id(),
                html_escape(&next_q),
                html_escape(display)
            )
        })
        .collect();
    let form = if app.auth.users.is_configured() || providers.is_empty() {
        format!(
            "{or}<form method=\"post\" action=\"{prefix}login/\">\
             <input type=\"hidden\" name=\"_csrf\" value=\"{token}\">\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\
             <label for=\"username\">User name</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            or = if providers.is_empty() {
                ""
            } else {
                "<p class=\"or\">or with a password</p>"
            },
            prefix = app.prefix,
            next = html_escape(next),
        )
    } else {
        String::new()
    };
    let mut resp = page(
        status,
        "Sign in to conda-store",
        &format!("{error}{buttons}{form}"),
    );
    let secure = if https { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={token}; Path={}; HttpOnly; SameSite=Strict; Max-Age=3600{secure}",
        app.prefix
    )) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp
}

/// Whether the browser shows a session cookie that no longer stands (expired, signed out,
/// its user removed): the sign-in page then says so.
fn session_ended(app: &App, headers: &HeaderMap) -> bool {
    let now = jiff::Timestamp::now().as_second();
    crate::auth::login::cookie(headers, COOKIE_NAME).is_some_and(|t| {
        !t.is_empty()
            && app
                .auth
                .signer
                .verify(t, now)
                .ok()
                .and_then(|c| app.auth.from_claims(c).ok())
                .is_none()
    })
}

/// `GET {prefix}login/`: the sign-in form.
pub async fn login_page(State(app): AppState, headers: HeaderMap, uri: Uri) -> Response {
    let Some(next) = login_next(&app, query_param(&uri, "next"), &headers) else {
        return off_site();
    };
    let notice = session_ended(&app, &headers)
        .then_some("Your session has ended (it expired or was signed out). Sign in again.");
    let mut resp = login_form(
        &app,
        forwarded_https(&headers),
        &next,
        notice,
        StatusCode::OK,
    );
    if notice.is_some() {
        // The dead cookie goes, so the notice is shown once.
        if let Ok(v) =
            HeaderValue::from_str(&format!("{COOKIE_NAME}=; Path=/; HttpOnly; Max-Age=0"))
        {
            resp.headers_mut().append(SET_COOKIE, v);
        }
    }
    resp
}

/// Where a sign-in goes afterwards: the UI when `next` is absent, `next` when it is of this
/// site, else `None` (the caller answers [`off_site`] before any session is made).
pub(crate) fn login_next(app: &App, next: Option<String>, headers: &HeaderMap) -> Option<String> {
    match next.filter(|n| !n.is_empty()) {
        None => Some(format!("{}ui/", app.prefix)),
        Some(n) => safe_next(&n, &origin(headers)),
    }
}

pub(crate) fn off_site() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Not signed in",
        "<p>The sign-in link asked to go to another site afterwards, which this server refuses. \
         Open conda-store from its own address.</p>",
    )
}

/// `POST {prefix}login/` with a form: checks the CSRF token, then the password; on success a
/// session cookie and a redirect to `next`.
pub async fn login_form_post(app: &App, headers: &HeaderMap, body: Body) -> Response {
    let bytes = match read_body(app, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let fields: HashMap<String, String> = url::form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let https = forwarded_https(headers);
    let Some(next) = login_next(app, fields.get("next").cloned(), headers) else {
        return off_site();
    };
    let sent = fields.get("_csrf").map(String::as_str).unwrap_or_default();
    let kept = crate::auth::login::cookie(headers, CSRF_COOKIE).unwrap_or_default();
    if sent.is_empty() || !crate::auth::constant_time_eq(sent.as_bytes(), kept.as_bytes()) {
        return login_form(
            app,
            https,
            &next,
            Some("The sign-in form expired or came from another page. Sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let (Some(username), Some(password)) = (fields.get("username"), fields.get("password")) else {
        return login_form(
            app,
            https,
            &next,
            Some("Give a user name and a password."),
            StatusCode::BAD_REQUEST,
        );
    };
    let caller = match app.auth.password_login(username, password) {
        Ok(c) => c,
        Err(e) => {
            return login_form(app, https, &next, Some(&e.message), e.status);
        }
    };
    let mut resp = redirect(&next);
    for cookie in [
        session_cookie(app, &caller, https),
        // The form's token is spent.
        format!(
            "{CSRF_COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
            app.prefix
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(SET_COOKIE, v);
        }
    }
    resp
}

/// The session cookie of a caller who just proved their password: `HttpOnly`, `SameSite=Lax`,
/// and `Secure` when the browser spoke https to the proxy in front (it must never go out over
/// plain http then).
pub fn session_cookie(app: &App, caller: &crate::auth::Caller, https: bool) -> String {
    let now = jiff::Timestamp::now().as_second();
    let token = app.auth.session_token(
        caller.username.as_deref().unwrap_or_default(),
        &caller.primary_namespace,
        now,
        None,
    );
    session_set_cookie(app, &token, https)
}

/// The `Set-Cookie` value carrying session `token` (any sign-in's).
pub(crate) fn session_set_cookie(app: &App, token: &str, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        app.auth.session_seconds
    )
}

/// `GET {prefix}logout/`: a page with the sign-out button (a POST: a link or an image
/// elsewhere cannot sign anyone out).
pub async fn logout_page(State(app): AppState) -> Response {
    page(
        StatusCode::OK,
        "Sign out of conda-store",
        &format!(
            "<form method=\"post\" action=\"{}logout/?next={}ui/\"><button type=\"submit\">Sign out</button></form>",
            app.prefix, app.prefix
        ),
    )
}

/// After a form's `POST {prefix}logout/`: where the browser goes (to this site only).
pub fn after_logout(headers: &HeaderMap, uri: &Uri, prefix: &str) -> Option<Response> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let next = query_param(uri, "next")
        .and_then(|n| safe_next(&n, &origin(headers)))
        .unwrap_or_else(|| format!("{prefix}ui/"));
    Some(redirect(&next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        let o = "http://cs.example:8080";
        assert_eq!(
            safe_next("/conda-store/ui/", o).as_deref(),
            Some("/conda-store/ui/")
        );
        assert_eq!(
            safe_next("http://cs.example:8080/conda-store/ui/x?y=1", o).as_deref(),
            Some("/conda-store/ui/x?y=1")
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "http://cs.example:8080.evil.example/",
            "javascript:alert(1)",
            "ui/",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(bad, o), None, "{bad:?}");
        }
    }

    #[test]
    fn origin_follows_the_proxy() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("10.0.0.1:8080"));
        assert_eq!(origin(&h), "http://10.0.0.1:8080");
        h.insert("x-forwarded-host", HeaderValue::from_static("cs.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(origin(&h), "https://cs.example");
    }

    #[test]
    fn script_strings_cannot_close_the_script() {
        assert_eq!(
            js_string("</script><x>"),
            "\"\\u003c/script\\u003e\\u003cx\\u003e\""
        );
    }
}
