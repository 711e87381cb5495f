//! Turning a request's credentials into a [`Caller`]: this gateway's tokens (Bearer or the
//! login cookie), HTTP Basic against the users file, and Kubernetes tokens through TokenReview.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conda_store_crds::rbac::Role;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use super::jwt::{Claims, Signer, is_hs256};
use super::users::Users;
use super::{Caller, Via};
use crate::error::ApiError;

/// The login cookie's name (as conda-store's).
pub const COOKIE_NAME: &str = "conda-store-auth";

/// How long a TokenReview answer is trusted.
const REVIEW_TTL: Duration = Duration::from_secs(60);

/// A TokenReview's answer (the caller, or none for a refused token) and when it came.
type Review = (Option<Caller>, Instant);

/// Authentication settings and state.
pub struct Authenticator {
    /// Signs this gateway's tokens.
    pub signer: Signer,
    /// People who may log in with a password.
    pub users: Users,
    /// The role people and service accounts get on `<their primary namespace>/*`.
    pub own_namespace_role: Option<Role>,
    /// Further bindings every authenticated caller gets.
    pub authenticated_bindings: Vec<(String, Role)>,
    /// Bindings callers without credentials get (none by default).
    pub anonymous_bindings: Vec<(String, Role)>,
    /// Checks Kubernetes tokens when set.
    pub token_review: Option<kube::Client>,
    /// Accepts ID tokens of this OpenID Connect issuer when set.
    pub oidc: Option<super::oidc::Oidc>,
    /// Lifetime of a login session and the default of an API token, seconds.
    pub session_seconds: i64,
    reviews: Mutex<HashMap<[u8; 32], Review>>,
}

impl Authenticator {
    /// An authenticator; Kubernetes tokens are reviewed when `token_review` is given.
    pub fn new(signer: Signer, users: Users, token_review: Option<kube::Client>) -> Authenticator {
        Authenticator {
            signer,
            users,
            own_namespace_role: Some(Role::Admin),
            authenticated_bindings: Vec::new(),
            anonymous_bindings: Vec::new(),
            token_review,
            oidc: None,
            session_seconds: 24 * 3600,
            reviews: Mutex::new(HashMap::new()),
        }
    }

    /// A person or service account with the configured bindings.
    pub fn user(&self, via: Via, username: &str, primary: &str, expires: Option<i64>) -> Caller {
        let mut bindings = Vec::new();
        if let Some(role) = self.own_namespace_role {
            bindings.push((format!("{primary}/*"), role));
        }
        bindings.extend(self.authenticated_bindings.iter().cloned());
        Caller {
            via,
            username: Some(username.to_string()),
            primary_namespace: primary.to_string(),
            bindings,
            expires,
        }
    }

    /// The caller a token's claims describe.
    pub fn from_claims(&self, c: Claims) -> Caller {
        let username = c.sub.clone().unwrap_or_else(|| "token".into());
        if c.session {
            return self.user(Via::Login, &username, &c.primary_namespace, Some(c.exp));
        }
        let mut bindings = Vec::new();
        for (pattern, roles) in &c.role_bindings {
            for r in roles {
                if let Ok(role) = r.parse::<Role>() {
                    bindings.push((pattern.clone(), role));
                }
            }
        }
        Caller {
            via: Via::Token,
            username: Some(username),
            primary_namespace: c.primary_namespace,
            bindings,
            expires: Some(c.exp),
        }
    }

    /// A session token for a logged-in person.
    pub fn session_token(&self, username: &str, primary: &str, now: i64) -> String {
        self.signer.sign(&Claims {
            sub: Some(username.into()),
            exp: now + self.session_seconds,
            primary_namespace: primary.into(),
            role_bindings: Default::default(),
            session: true,
        })
    }

    /// The caller of a request with these headers.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let now = jiff::Timestamp::now().as_second();
        if let Some(value) = headers.get(AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
            let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
            let credentials = credentials.trim();
            return match scheme.to_ascii_lowercase().as_str() {
                "bearer" if is_hs256(credentials) => self
                    .signer
                    .verify(credentials, now)
                    .map(|c| self.from_claims(c))
                    .map_err(|e| ApiError::unauthorized(e.to_string())),
                "bearer"
                    if self
                        .oidc
                        .as_ref()
                        .is_some_and(|o| o.claims_issuer(credentials)) =>
                {
                    let oidc = self.oidc.as_ref().expect("checked");
                    let user = oidc
                        .verify(credentials, now)
                        .await
                        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
                    Ok(self.user(Via::Oidc, &user, &user, None))
                }
                "bearer" if self.token_review.is_some() => self.review(credentials).await,
                "bearer" => Err(ApiError::unauthorized("the bearer token is not valid")),
                "basic" => {
                    let decoded = STANDARD
                        .decode(credentials)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
                    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
                    self.password_login(user, password)
                        .ok_or_else(|| ApiError::unauthorized("wrong user name or password"))
                }
                other => Err(ApiError::unauthorized(format!(
                    "the authorization scheme {other:?} is not supported; use Bearer or Basic"
                ))),
            };
        }
        // A stale or foreign cookie is ignored: the caller is anonymous until they log in.
        if let Some(token) = cookie(headers, COOKIE_NAME)
            && let Ok(c) = self.signer.verify(token, now)
        {
            return Ok(self.from_claims(c));
        }
        Ok(Caller::anonymous(self.anonymous_bindings.clone()))
    }

    /// The person with this user name and password, if they are.
    pub fn password_login(&self, username: &str, password: &str) -> Option<Caller> {
        let user = self.users.check(username, password)?;
        let primary = user.primary_namespace.as_deref().unwrap_or(&user.username);
        Some(self.user(Via::Login, &user.username, primary, None))
    }

    async fn review(&self, token: &str) -> Result<Caller, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((answer, at)) = self.reviews.lock().expect("not poisoned").get(&key)
            && at.elapsed() < REVIEW_TTL
        {
            return answer
                .clone()
                .ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"));
        }
        let client = self.token_review.clone().expect("checked by the caller");
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(client)
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let caller = match (status.authenticated, status.user.and_then(|u| u.username)) {
            (Some(true), Some(name)) => {
                // system:serviceaccount:<namespace>:<name> → <name> in <namespace>.
                let (primary, user) = match name
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                {
                    Some((ns, sa)) => (ns.to_string(), sa.to_string()),
                    None => (name.clone(), name.clone()),
                };
                Some(self.user(Via::Kubernetes, &user, &primary, None))
            }
            _ => None,
        };
        let mut reviews = self.reviews.lock().expect("not poisoned");
        if reviews.len() > 10_000 {
            reviews.retain(|_, (_, at)| at.elapsed() < REVIEW_TTL);
        }
        reviews.insert(key, (caller.clone(), Instant::now()));
        caller.ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
