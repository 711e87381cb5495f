//! Browser sign-in (OAuth 2.0 authorization code + PKCE, OpenID Connect) against a small
//! issuer on loopback that checks what a real one checks: the client secret, the redirect URI,
//! the PKCE verifier, single-use codes; ID tokens signed RS256 with a key `openssl` made, the
//! profile left to its userinfo endpoint (as oidc-provider does for the code flow). The test
//! plays the browser: it follows redirects and carries cookies by hand. The browser journeys
//! against npm's oidc-provider and a real JupyterHub are in tests/e2e/browser.py.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use conda_store_api_server::app::App;
use conda_store_api_server::routes;
use ring::rsa::PublicKeyComponents;
use ring::signature::RsaKeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};

const CLIENT: &str = "conda-store";
const SECRET: &str = "client-secret";

/// What the issuer remembers of a code.
struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    user: String,
}

struct Idp {
    issuer: String,
    key: RsaKeyPair,
    codes: Mutex<HashMap<String, Grant>>,
    /// Who signs in at the authorization endpoint next.
    user: Mutex<String>,
    /// A nonce the ID token carries instead of the one asked (a token of another sign-in).
    wrong_nonce: Mutex<bool>,
    issued: Mutex<u32>,
}

async fn authorize(
    State(idp): State<Arc<Idp>>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    if q.get("client_id").map(String::as_str) != Some(CLIENT)
        || q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let mut n = idp.issued.lock().unwrap();
    *n += 1;
    let code = format!("code-{n}");
    let redirect_uri = q["redirect_uri"].clone();
    idp.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            challenge: q["code_challenge"].clone(),
            nonce: q.get("nonce").cloned().unwrap_or_default(),
            user: idp.user.lock().unwrap().clone(),
        },
    );
    let back = url::Url::parse_with_params(
        &redirect_uri,
        [
            ("code", code.as_str()),
            ("state", &q["state"]),
            ("iss", &idp.issuer),
        ],
    )
    .unwrap();
    Redirect::to(back.as_str()).into_response()
}

async fn token(State(idp): State<Arc<Idp>>, body: axum::body::Bytes) -> axum::response::Response {
    let f: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let refuse = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    if f.get("client_id").map(String::as_str) != Some(CLIENT)
        || f.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        return refuse("invalid_client");
    }
    // A code is good once.
    let Some(grant) = f
        .get("code")
        .and_then(|c| idp.codes.lock().unwrap().remove(c))
    else {
        return refuse("invalid_grant");
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if B64.encode(Sha256::digest(verifier.as_bytes())) != grant.challenge
        || f.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return refuse("invalid_grant");
    }
    let now = jiff::Timestamp::now().as_second();
    let nonce = if *idp.wrong_nonce.lock().unwrap() {
        "another-sign-in".to_string()
    } else {
        grant.nonce
    };
    let id_token = support::sign(
        &idp.key,
        "k1",
        &json!({"iss": idp.issuer, "aud": CLIENT, "exp": now + 300, "iat": now,
                "sub": format!("id-{}", grant.user), "nonce": nonce}),
    );
    Json(
        json!({"access_token": format!("at-{}", grant.user), "token_type": "Bearer",
                "id_token": id_token}),
    )
    .into_response()
}

async fn userinfo(headers: HeaderMap) -> axum::response::Response {
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer at-"))
        .map(str::to_string);
    match user {
        Some(u) => Json(json!({"sub": format!("id-{u}"), "preferred_username": u,
                               "groups": ["/data-team", "*", "a/b"]}))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn start_idp(dir: &std::path::Path) -> Arc<Idp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let key = support::rsa_key(dir, "issuer");
    let public: PublicKeyComponents<Vec<u8>> = key.public().into();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": B64.encode(&public.n), "e": B64.encode(&public.e)}]});
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo")});
    let idp = Arc::new(Idp {
        issuer,
        key,
        codes: Mutex::new(HashMap::new()),
        user: Mutex::new("carol".into()),
        wrong_nonce: Mutex::new(false),
        issued: Mutex::new(0),
    });
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { Json(discovery) }),
        )
        .route("/keys", get(move || async move { Json(jwks) }))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    idp
}

/// An answer of the gateway: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> String {
        self.headers["location"].to_str().unwrap().to_string()
    }

    /// The value a `Set-Cookie` gives cookie `name` (`Some("")` when it is cleared).
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

async fn get_page(app: &Arc<App>, uri: &str, cookies: &[(&str, &str)]) -> Answer {
    get_via(app, uri, cookies, &[]).await
}

/// [`get_page`] with more headers (a proxy's `X-Forwarded-*`).
async fn get_via(
    app: &Arc<App>,
    uri: &str,
    cookies: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Answer {
    let cookie: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut req = Request::builder()
        .uri(uri)
        .header("host", "cs.test")
        .header("cookie", cookie.join("; "));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::empty()).unwrap();
    let svc =
        tower::util::MapRequestLayer::new(routes::normalize).layer(routes::router(app.clone()));
    let resp = svc.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The browser at the issuer: the callback URL it is sent back to.
async fn at_idp(authorize_url: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(authorize_url).send().await.unwrap();
    assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// Begins a sign-in: (the flow cookie, the issuer's authorization URL).
async fn begin(app: &Arc<App>, next: &str) -> (String, String) {
    let a = get_page(
        app,
        &format!("/conda-store/oauth_login/oidc/?next={next}"),
        &[],
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    (
        a.cookie("conda-store-oauth").expect("a flow cookie"),
        a.location(),
    )
}

/// The callback's path and query, as the gateway's router sees it.
fn local(callback: &str) -> String {
    let u = url::Url::parse(callback).unwrap();
    format!("{}?{}", u.path(), u.query().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_sign_in_with_the_issuer() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let idp = start_idp(dir.path()).await;
    // Spelled here, not through `setup`: the second replica below takes the same flags.
    let flags = oidc_flags(
        &idp,
        &[
            "--oidc-display-name",
            "Test IdP",
            "--group-binding",
            "*:{group}/*=editor",
        ],
    );
    let (app, _w) = support::gateway(dir.path(), &flags).await;

    // The sign-in page offers the provider and, without a users file, no password form.
    let page = get_page(&app, "/conda-store/login/?next=/conda-store/ui/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign in with Test IdP"), "{}", page.body);
    assert!(
        page.body
            .contains("/conda-store/oauth_login/oidc/?next=%2Fconda-store%2Fui"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("type=\"password\""));

    // The authorization request: PKCE, state, nonce, the callback of this origin.
    let (flow, to) = begin(&app, "/conda-store/ui/demo").await;
    let q: HashMap<String, String> = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(
        to.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{to}"
    );
    assert_eq!(
        q["redirect_uri"],
        "http://cs.test/conda-store/oauth_callback/"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["state"].len() >= 40 && q["nonce"].len() >= 40 && q["code_challenge"].len() == 43);
    assert_eq!(q["scope"], "openid profile");

    // Signed in: a session, back to `next`, the groups mapped (only valid names).
    let callback = at_idp(&to).await;
    let done = get_page(&app, &local(&callback), &[("conda-store-oauth", &flow)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/conda-store/ui/demo");
    assert_eq!(done.cookie("conda-store-oauth").as_deref(), Some(""));
    let session = done.cookie("conda-store-auth").expect("a session cookie");
    let me = get_page(
        &app,
        "/conda-store/api/v1/permission/",
        &[("conda-store-auth", &session)],
    )
    .await;
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["data"]["authenticated"], true, "{me}");
    assert_eq!(me["data"]["primary_namespace"], "carol");
    let roles = me["data"]["entity_roles"].as_object().unwrap();
    assert_eq!(roles["carol/*"], json!(["admin"]), "{me}");
    assert_eq!(roles["data-team/*"], json!(["editor"]), "{me}");
    assert!(!roles.contains_key("*/*") && roles.len() == 2, "{me}");

    // Replayed: the same answer and flow cookie again.
    let again = get_page(&app, &local(&callback), &[("conda-store-oauth", &flow)]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert_eq!(again.cookie("conda-store-auth"), None);

    // ... at another replica (same key, its own memory): the issuer refuses the used code.
    let other_dir = tempfile::tempdir().unwrap();
    let (replica, _w2) = support::gateway(other_dir.path(), &flags).await;
    let again = get_page(&replica, &local(&callback), &[("conda-store-oauth", &flow)]).await;
    assert_eq!(again.status, 502, "{}", again.body);
    assert!(again.body.contains("invalid_grant"), "{}", again.body);
    assert_eq!(again.cookie("conda-store-auth"), None);

    // A forged state: the answer of someone else's sign-in in this browser.
    let (mine, _) = begin(&app, "/conda-store/ui/").await;
    let (_, theirs) = begin(&app, "/conda-store/ui/").await;
    let theirs = at_idp(&theirs).await;
    let forged = get_page(&app, &local(&theirs), &[("conda-store-oauth", &mine)]).await;
    assert_eq!(forged.status, 400);
    assert!(forged.body.contains("state differs"), "{}", forged.body);
    assert_eq!(forged.cookie("conda-store-auth"), None);

    // No sign-in begun in this browser; a tampered flow cookie is none either.
    let none = get_page(&app, &local(&theirs), &[]).await;
    assert_eq!(none.status, 400);
    assert!(
        none.body.contains("No sign-in was started"),
        "{}",
        none.body
    );
    let tampered = format!("x{mine}");
    let none = get_page(&app, &local(&theirs), &[("conda-store-oauth", &tampered)]).await;
    assert!(
        none.body.contains("No sign-in was started"),
        "{}",
        none.body
    );

    // An ID token carrying another sign-in's nonce.
    *idp.wrong_nonce.lock().unwrap() = true;
    let (flow, to) = begin(&app, "/conda-store/ui/").await;
    let cb = at_idp(&to).await;
    let bad = get_page(&app, &local(&cb), &[("conda-store-oauth", &flow)]).await;
    assert_eq!(bad.status, 502);
    assert!(bad.body.contains("nonce"), "{}", bad.body);
    assert_eq!(bad.cookie("conda-store-auth"), None);
    *idp.wrong_nonce.lock().unwrap() = false;

    // Another issuer's answer (RFC 9207 `iss`), and the provider's own refusal.
    let (flow, to) = begin(&app, "/conda-store/ui/").await;
    let cb = at_idp(&to).await.replace(
        &format!("iss={}", urlenc(&idp.issuer)),
        "iss=https%3A%2F%2Fevil.example",
    );
    let bad = get_page(&app, &local(&cb), &[("conda-store-oauth", &flow)]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("another identity provider"),
        "{}",
        bad.body
    );
    let (flow, to) = begin(&app, "/conda-store/ui/").await;
    let state = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = get_page(
        &app,
        &format!("/conda-store/oauth_callback/?error=access_denied&error_description=the%20user%20said%20no&state={}", urlenc(&state)),
        &[("conda-store-oauth", &flow)],
    )
    .await;
    assert_eq!(denied.status, 401);
    assert!(denied.body.contains("the user said no"), "{}", denied.body);
    assert_eq!(denied.cookie("conda-store-auth"), None);

    // `next` off-site, and a provider this gateway does not offer.
    let off = get_page(
        &app,
        "/conda-store/oauth_login/oidc/?next=https://evil.example/",
        &[],
    )
    .await;
    assert_eq!(off.status, 400);
    assert_eq!(off.cookie("conda-store-oauth"), None);
    let hub = get_page(&app, "/conda-store/oauth_login/jupyterhub/", &[]).await;
    assert_eq!(hub.status, 404);
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The gateway's flags for signing in with `idp`, then `extra`.
fn oidc_flags<'a>(idp: &'a Idp, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--oidc-issuer",
        &idp.issuer,
        "--oidc-client-id",
        CLIENT,
        "--oidc-client-secret",
        SECRET,
    ];
    flags.extend(extra);
    flags
}

/// An issuer and a gateway that signs people in with it (plus `extra` flags); the directory
/// holds both's files.
async fn setup(
    extra: &[&str],
) -> (
    tempfile::TempDir,
    Arc<Idp>,
    Arc<App>,
    conda_store_api_server::app::Writers,
) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let idp = start_idp(dir.path()).await;
    let (app, w) = support::gateway(dir.path(), &oidc_flags(&idp, extra)).await;
    (dir, idp.clone(), app, w)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ended_session_is_sent_to_sign_in_and_told_so() {
    // Expiry counts whole seconds, so a 1 s session can end before the first request on a
    // loaded machine: 3 s leaves at least 2 for it (then wait past it by a whole second).
    let (_dir, _idp, app, _w) = setup(&["--session-seconds", "3"]).await;
    let (flow, to) = begin(&app, "/conda-store/ui/").await;
    let cb = at_idp(&to).await;
    let done = get_page(&app, &local(&cb), &[("conda-store-oauth", &flow)]).await;
    let session = done.cookie("conda-store-auth").expect("a session");
    let ui = get_page(&app, "/conda-store/ui/", &[("conda-store-auth", &session)]).await;
    // Signed in: the UI's page (503 here: these tests have no UI bundle), not the sign-in.
    assert_ne!(ui.status, 303, "signed in: the UI's page");
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    let ui = get_page(&app, "/conda-store/ui/", &[("conda-store-auth", &session)]).await;
    assert_eq!(ui.status, 303);
    assert!(
        ui.location().starts_with("/conda-store/login/?next="),
        "{}",
        ui.location()
    );
    let login = get_page(&app, &ui.location(), &[("conda-store-auth", &session)]).await;
    assert!(
        login.body.contains("Your session has ended"),
        "{}",
        login.body
    );
    assert_eq!(login.cookie("conda-store-auth").as_deref(), Some(""));
    // A first visit says nothing of the kind.
    let fresh = get_page(&app, "/conda-store/login/", &[]).await;
    assert!(!fresh.body.contains("session has ended"));
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_tls_proxy_the_callback_and_cookies_are_https() {
    let (_dir, _idp, app, _w) = setup(&[]).await;
    let proxy = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "conda.example.org"),
    ];
    let a = get_via(&app, "/conda-store/oauth_login/oidc/", &[], &proxy).await;
    assert_eq!(a.status, 303);
    let to = a.location();
    let q: HashMap<String, String> = url::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        q["redirect_uri"],
        "https://conda.example.org/conda-store/oauth_callback/"
    );
    let set: Vec<&str> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        set.iter().any(|c| c.starts_with("conda-store-oauth=")
            && c.contains("; Secure")
            && c.contains("Path=/conda-store/")),
        "{set:?}"
    );
    let flow = a.cookie("conda-store-oauth").unwrap();
    let cb = at_idp(&to).await;
    let done = get_via(&app, &local(&cb), &[("conda-store-oauth", &flow)], &proxy).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let session = done
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("conda-store-auth="))
        .unwrap()
        .to_string();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );
}
