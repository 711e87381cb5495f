//! Browser sign-in through an identity provider: the OAuth 2.0 authorization-code flow with
//! PKCE (RFC 7636) against an OpenID Connect issuer (with `state`, `nonce`, the `iss` answer
//! parameter of RFC 9207, the ID token verified as bearer ID tokens are), and against
//! JupyterHub as conda-store's `JupyterHubOAuthAuthentication` does (`/hub/api/oauth2/*`,
//! then `/hub/api/user`).
//!
//! The flow's secrets (state, nonce, PKCE verifier, where to go afterwards) travel in a
//! short-lived cookie sealed with the gateway's key: any replica finishes a flow another began,
//! and nothing is stored for sign-ins never finished. A finished flow's state is remembered
//! until the flow would have expired, so its callback cannot be used twice here; the provider
//! refuses a second use of the code itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::oidc::{Identity, Oidc};

/// The cookie carrying a sign-in in progress.
pub const FLOW_COOKIE: &str = "conda-store-oauth";
/// How long a sign-in may take at the provider.
pub const FLOW_SECONDS: i64 = 600;
/// Separates the flow cookie's MAC from every other use of the gateway's key.
const FLOW_DOMAIN: &[u8] = b"conda-store oauth flow\0";

/// An identity provider people sign in with from the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The configured OpenID Connect issuer.
    Oidc,
    /// A JupyterHub, as an OAuth provider.
    JupyterHub,
}

impl ProviderKind {
    /// Its name in paths (`oauth_login/<id>`) and in a session's `src` claim.
    pub fn id(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
            ProviderKind::JupyterHub => "jupyterhub",
        }
    }

    /// The provider a path segment names.
    pub fn from_id(id: &str) -> Option<ProviderKind> {
        [ProviderKind::Oidc, ProviderKind::JupyterHub]
            .into_iter()
            .find(|p| p.id() == id)
    }
}

/// A sign-in in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Who it signs in with.
    pub provider: ProviderKind,
    /// Binds the provider's answer to this browser.
    pub state: String,
    /// Binds the ID token to this sign-in.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where the browser goes afterwards (a path of this site).
    pub next: String,
    /// The callback URL the provider was given (sent again with the code).
    pub redirect_uri: String,
    /// When the sign-in expires, seconds since the epoch.
    pub exp: i64,
}

/// A random URL-safe string of 32 bytes.
pub fn random_token() -> String {
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .expect("the system's random source");
    B64.encode(raw)
}

impl Flow {
    /// A new sign-in with `provider`, its secrets from `random`.
    pub fn begin(
        provider: ProviderKind,
        next: &str,
        redirect_uri: &str,
        now: i64,
        mut random: impl FnMut() -> String,
    ) -> Flow {
        Flow {
            provider,
            state: random(),
            nonce: random(),
            verifier: random(),
            next: next.to_string(),
            redirect_uri: redirect_uri.to_string(),
            exp: now + FLOW_SECONDS,
        }
    }

    /// The PKCE challenge (S256) of the verifier.
    pub fn challenge(&self) -> String {
        B64.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// Where the browser is sent to sign in.
    pub fn authorize_url(&self, endpoint: &str, client_id: &str, scopes: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("state", &self.state)
            .append_pair("code_challenge", &self.challenge())
            .append_pair("code_challenge_method", "S256");
        if !scopes.is_empty() {
            q.append_pair("scope", scopes);
        }
        if self.provider == ProviderKind::Oidc {
            q.append_pair("nonce", &self.nonce);
        }
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{sep}{}", q.finish())
    }

    /// The flow as a cookie value: its JSON and a MAC under `key`.
    pub fn seal(&self, key: &hmac::Key) -> String {
        let body = B64.encode(serde_json::to_vec(self).expect("a flow serialises"));
        let tag = mac(key, &body);
        format!("{body}.{}", B64.encode(tag.as_ref()))
    }

    /// The flow a cookie value carries, if `key` sealed it and it has not expired.
    pub fn open(value: &str, key: &hmac::Key, now: i64) -> Option<Flow> {
        let (body, tag) = value.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        // Constant-time comparison.
        hmac::verify(key, &[FLOW_DOMAIN, body.as_bytes()].concat(), &tag).ok()?;
        let flow: Flow = serde_json::from_slice(&B64.decode(body).ok()?).ok()?;
        (flow.exp > now).then_some(flow)
    }
}

fn mac(key: &hmac::Key, body: &str) -> hmac::Tag {
    hmac::sign(key, &[FLOW_DOMAIN, body.as_bytes()].concat())
}

/// The provider's answer at the callback (its query parameters).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// The state sent.
    pub state: Option<String>,
    /// Why the provider refused, if it did.
    pub error: Option<String>,
    /// Its words for it.
    pub error_description: Option<String>,
    /// The issuer answering (RFC 9207), when the provider says.
    pub iss: Option<String>,
}

/// Why a sign-in was refused. The messages are shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No sign-in in progress in this browser.
    #[error(
        "No sign-in was started in this browser, or it was started more than ten minutes ago. \
         Sign in again."
    )]
    NoFlow,
    /// The answer's state is not this browser's.
    #[error(
        "The identity provider's answer does not belong to the sign-in started in this browser \
         (its state differs). Sign in again."
    )]
    StateMismatch,
    /// The answer was used already.
    #[error("This sign-in answer was already used. Sign in again.")]
    Replayed,
    /// Another issuer answered.
    #[error("The answer came from another identity provider than the one asked.")]
    WrongIssuer,
    /// The provider said no.
    #[error("The identity provider did not sign you in: {0}")]
    Provider(String),
    /// The code could not be turned into an identity.
    #[error("The identity provider's answer could not be used: {0}")]
    Exchange(String),
}

/// Checks the provider's answer against the sign-in this browser began: the code to exchange.
pub fn check_callback(
    flow: Option<&Flow>,
    answer: &Callback,
    issuer: Option<&str>,
) -> Result<String, Refusal> {
    let flow = flow.ok_or(Refusal::NoFlow)?;
    let state = answer.state.as_deref().unwrap_or_default();
    if !super::constant_time_eq(state.as_bytes(), flow.state.as_bytes()) {
        return Err(Refusal::StateMismatch);
    }
    if let Some(e) = &answer.error {
        let said = answer.error_description.as_deref().unwrap_or(e);
        return Err(Refusal::Provider(said.chars().take(200).collect()));
    }
    if let (Some(said), Some(want)) = (&answer.iss, issuer)
        && said.trim_end_matches('/') != want.trim_end_matches('/')
    {
        return Err(Refusal::WrongIssuer);
    }
    answer
        .code
        .clone()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Refusal::Exchange("it carries no code".into()))
}

/// The browser sign-in settings of the OpenID Connect issuer.
#[derive(Debug, Clone)]
pub struct OidcClient {
    /// The button's words: "Sign in with {display}".
    pub display: String,
    /// The client secret (none: a public client, PKCE alone).
    pub client_secret: Option<String>,
    /// The scopes asked for.
    pub scopes: String,
}

/// A JupyterHub people sign in with (this gateway registered there as an OAuth client
/// service).
#[derive(Debug, Clone)]
pub struct JupyterHub {
    /// The hub's address as browsers reach it (without `/hub/`).
    pub url: String,
    /// The hub's address as this gateway reaches it (the same by default).
    pub api_url: String,
    /// The service's OAuth client id (`service-...`).
    pub client_id: String,
    /// The service's API token, its client secret.
    pub client_secret: String,
    /// The button's words.
    pub display: String,
}

/// The browser sign-in providers and the states of finished sign-ins.
pub struct Sso {
    /// The OpenID Connect issuer's browser sign-in, when configured.
    pub oidc: Option<OidcClient>,
    /// JupyterHub, when configured.
    pub jupyterhub: Option<JupyterHub>,
    /// Made at the first sign-in (building a client needs the TLS provider installed).
    http: std::sync::OnceLock<reqwest::Client>,
    spent: Mutex<HashMap<String, i64>>,
}

impl Default for Sso {
    fn default() -> Sso {
        Sso::new(None, None)
    }
}

impl Sso {
    /// The providers configured.
    pub fn new(oidc: Option<OidcClient>, jupyterhub: Option<JupyterHub>) -> Sso {
        Sso {
            oidc,
            jupyterhub,
            http: std::sync::OnceLock::new(),
            spent: Mutex::new(HashMap::new()),
        }
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client")
        })
    }

    /// The providers people may pick, with the button's words.
    pub fn providers(&self) -> Vec<(ProviderKind, String)> {
        let mut out = Vec::new();
        if let Some(o) = &self.oidc {
            out.push((ProviderKind::Oidc, o.display.clone()));
        }
        if let Some(j) = &self.jupyterhub {
            out.push((ProviderKind::JupyterHub, j.display.clone()));
        }
        out
    }

    /// Records `flow` as finished; false when it was already (a replayed answer).
    pub fn spend(&self, flow: &Flow, now: i64) -> bool {
        let mut spent = self.spent.lock().expect("not poisoned");
        spent.retain(|_, exp| *exp > now);
        spent.insert(flow.state.clone(), flow.exp).is_none()
    }

    /// Where to send the browser for `flow`.
    pub async fn authorize_url(
        &self,
        flow: &Flow,
        issuer: Option<&Oidc>,
    ) -> Result<String, Refusal> {
        match flow.provider {
            ProviderKind::Oidc => {
                let (client, oidc) = self.oidc_parts(issuer)?;
                let endpoint = oidc
                    .endpoints()
                    .await
                    .map_err(|e| Refusal::Exchange(e.to_string()))?
                    .authorization_endpoint
                    .ok_or_else(|| {
                        Refusal::Exchange("the issuer publishes no authorization endpoint".into())
                    })?;
                Ok(flow.authorize_url(&endpoint, oidc.client_id(), &client.scopes))
            }
            ProviderKind::JupyterHub => {
                let hub = self.hub()?;
                Ok(flow.authorize_url(
                    &format!("{}/hub/api/oauth2/authorize", hub.url),
                    &hub.client_id,
                    "",
                ))
            }
        }
    }

    /// Exchanges the code of `flow` for the person it signs in.
    pub async fn identify(
        &self,
        flow: &Flow,
        code: &str,
        issuer: Option<&Oidc>,
        now: i64,
    ) -> Result<Identity, Refusal> {
        let fail = |e: String| Refusal::Exchange(e);
        match flow.provider {
            ProviderKind::Oidc => {
                let (client, oidc) = self.oidc_parts(issuer)?;
                let endpoints = oidc.endpoints().await.map_err(|e| fail(e.to_string()))?;
                let token_endpoint = endpoints
                    .token_endpoint
                    .clone()
                    .ok_or_else(|| fail("the issuer publishes no token endpoint".into()))?;
                let tokens = self
                    .exchange(
                        &token_endpoint,
                        flow,
                        code,
                        oidc.client_id(),
                        client.client_secret.as_deref(),
                    )
                    .await?;
                let id_token = tokens
                    .get("id_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| fail("no ID token came with the code".into()))?;
                let mut claims = oidc
                    .verify_claims(id_token, now, Some(&flow.nonce))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                // Providers may leave the profile out of the ID token (oidc-provider does for
                // the code flow); the userinfo endpoint then has it.
                if !oidc.names_user(&claims)
                    && let (Some(ep), Some(at)) = (
                        endpoints.userinfo_endpoint.as_deref(),
                        tokens.get("access_token").and_then(Value::as_str),
                    )
                {
                    let sub = claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let info = oidc
                        .userinfo(ep, at, &sub)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    if let (Some(c), Some(i)) = (claims.as_object_mut(), info.as_object()) {
                        for (k, v) in i {
                            c.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
                oidc.identity(&claims).map_err(|e| fail(e.to_string()))
            }
            ProviderKind::JupyterHub => {
                let hub = self.hub()?;
                let tokens = self
                    .exchange(
                        &format!("{}/hub/api/oauth2/token", hub.api_url),
                        flow,
                        code,
                        &hub.client_id,
                        Some(&hub.client_secret),
                    )
                    .await?;
                let access = tokens
                    .get("access_token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| fail("no access token came with the code".into()))?;
                let user = self
                    .get_json(&format!("{}/hub/api/user", hub.api_url), access)
                    .await?;
                hub_identity(&user).map_err(fail)
            }
        }
    }

    fn oidc_parts<'a>(
        &'a self,
        issuer: Option<&'a Oidc>,
    ) -> Result<(&'a OidcClient, &'a Oidc), Refusal> {
        match (&self.oidc, issuer) {
            (Some(c), Some(o)) => Ok((c, o)),
            _ => Err(Refusal::Exchange(
                "sign-in with OpenID Connect is not configured".into(),
            )),
        }
    }

    fn hub(&self) -> Result<&JupyterHub, Refusal> {
        self.jupyterhub
            .as_ref()
            .ok_or_else(|| Refusal::Exchange("sign-in with JupyterHub is not configured".into()))
    }

    async fn exchange(
        &self,
        endpoint: &str,
        flow: &Flow,
        code: &str,
        client_id: &str,
        client_secret: Option<&str>,
    ) -> Result<Value, Refusal> {
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &flow.redirect_uri)
                .append_pair("client_id", client_id)
                .append_pair("code_verifier", &flow.verifier);
            if let Some(s) = client_secret {
                form.append_pair("client_secret", s);
            }
            form.finish()
        };
        let resp = self
            .http()
            .post(endpoint)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| Refusal::Exchange(format!("the token endpoint: {e}")))?;
        let status = resp.status();
        let body: Value = resp
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if !status.is_success() {
            // OAuth's error answer (`invalid_grant` for a used or expired code).
            let why = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .map(|s| s.chars().take(200).collect::<String>())
                .unwrap_or_else(|| status.to_string());
            return Err(Refusal::Exchange(format!("the code was refused ({why})")));
        }
        Ok(body)
    }

    async fn get_json(&self, url: &str, bearer: &str) -> Result<Value, Refusal> {
        let resp = self
            .http()
            .get(url)
            .bearer_auth(bearer)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| Refusal::Exchange(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(Refusal::Exchange(format!("{url}: {}", resp.status())));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Refusal::Exchange(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| Refusal::Exchange(format!("{url}: {e}")))
    }
}

/// The person JupyterHub's `/hub/api/user` describes: `name` (conda-store's `user_data_key`)
/// and `groups`.
pub fn hub_identity(user: &Value) -> Result<Identity, String> {
    let name = user
        .get("name")
        .and_then(Value::as_str)
        .ok_or("JupyterHub did not say who signed in")?;
    conda_store_crds::naming::validate_conda_name(name)
        .map_err(|e| format!("the JupyterHub user name: {e}"))?;
    let groups = user
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        username: name.to_string(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"k")
    }

    fn flow() -> Flow {
        let mut n = 0;
        Flow::begin(
            ProviderKind::Oidc,
            "/conda-store/ui/",
            "http://cs/conda-store/oauth_callback/",
            1000,
            || {
                n += 1;
                format!("r{n}")
            },
        )
    }

    #[test]
    fn the_flow_cookie_is_sealed_and_expires() {
        let f = flow();
        let sealed = f.seal(&key());
        assert_eq!(Flow::open(&sealed, &key(), 1000), Some(f.clone()));
        assert_eq!(Flow::open(&sealed, &key(), 1000 + FLOW_SECONDS), None);
        assert_eq!(
            Flow::open(&sealed, &hmac::Key::new(hmac::HMAC_SHA256, b"other"), 1000),
            None
        );
        // A changed body (another next) breaks the seal.
        let (_, tag) = sealed.split_once('.').unwrap();
        let mut g = f.clone();
        g.next = "https://evil.example/".into();
        let body = B64.encode(serde_json::to_vec(&g).unwrap());
        assert_eq!(Flow::open(&format!("{body}.{tag}"), &key(), 1000), None);
        // A session token's MAC is no flow's: the domain differs.
        let plain = hmac::sign(&key(), body.as_bytes());
        let forged = format!("{body}.{}", B64.encode(plain.as_ref()));
        assert_eq!(Flow::open(&forged, &key(), 1000), None);
    }

    #[test]
    fn the_authorize_url_carries_pkce_state_and_nonce() {
        let f = flow();
        let u = url::Url::parse(&f.authorize_url("https://idp/auth?x=1", "cs", "openid profile"))
            .unwrap();
        let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["x"], "1");
        assert_eq!(q["state"], f.state);
        assert_eq!(q["nonce"], f.nonce);
        assert_eq!(q["code_challenge_method"], "S256");
        // RFC 7636 appendix B.
        let rfc = Flow {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ..f.clone()
        };
        assert_eq!(
            rfc.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(q["code_challenge"], f.challenge());
        assert_eq!(q["redirect_uri"], "http://cs/conda-store/oauth_callback/");
        assert_eq!(q["scope"], "openid profile");
        let hub = Flow {
            provider: ProviderKind::JupyterHub,
            ..f
        };
        assert!(
            !hub.authorize_url("https://hub/a", "service-cs", "")
                .contains("nonce")
        );
    }

    #[test]
    fn callbacks_are_checked() {
        let f = flow();
        let ok = Callback {
            code: Some("c".into()),
            state: Some(f.state.clone()),
            iss: Some("https://idp/".into()),
            ..Default::default()
        };
        assert_eq!(
            check_callback(Some(&f), &ok, Some("https://idp")),
            Ok("c".into())
        );
        assert_eq!(check_callback(None, &ok, None), Err(Refusal::NoFlow));
        let forged = Callback {
            state: Some("forged".into()),
            ..ok.clone()
        };
        assert_eq!(
            check_callback(Some(&f), &forged, None),
            Err(Refusal::StateMismatch)
        );
        assert_eq!(
            check_callback(Some(&f), &ok, Some("https://other")),
            Err(Refusal::WrongIssuer)
        );
        let denied = Callback {
            code: None,
            error: Some("access_denied".into()),
            ..ok.clone()
        };
        assert_eq!(
            check_callback(Some(&f), &denied, None),
            Err(Refusal::Provider("access_denied".into()))
        );
        let no_code = Callback { code: None, ..ok };
        assert!(matches!(
            check_callback(Some(&f), &no_code, None),
            Err(Refusal::Exchange(_))
        ));
    }

    #[test]
    fn a_flow_is_spent_once() {
        let sso = Sso::default();
        let f = flow();
        assert!(sso.spend(&f, 1000));
        assert!(!sso.spend(&f, 1001));
        // Forgotten once the flow would have expired anyway.
        assert!(sso.spend(&f, f.exp + 1));
    }

    #[test]
    fn jupyterhub_users() {
        let who = hub_identity(&json!({"name": "dana", "groups": ["data-team"], "admin": false}))
            .unwrap();
        assert_eq!(who.username, "dana");
        assert_eq!(who.groups, vec!["data-team".to_string()]);
        assert!(hub_identity(&json!({"name": "a/b"})).is_err());
        assert!(hub_identity(&json!({"kind": "user"})).is_err());
    }
}
