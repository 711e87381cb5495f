//! Turning a request's credentials into a [`Caller`]: this gateway's tokens (Bearer or the
//! login cookie), HTTP Basic against the users file, and Kubernetes tokens through TokenReview.
//!
//! No credential this gateway issues outlives its source: a login session ends with the
//! user's entry in the users file (read again when it changes), tokens issued to people of the
//! users file stop with it too, an API token expires no later than the credential it was asked
//! with (an OIDC ID token, a ServiceAccount token's own `exp`), and any token carrying an id
//! can be revoked before then.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use conda_store_crds::rbac::Role;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use ring::hmac;
use sha2::{Digest, Sha256};

use super::jwt::{Claims, Signer, is_hs256};
use super::users::{Throttle, UsersFile};
use super::{Caller, Via};
use crate::error::ApiError;

/// The login cookie's name (as conda-store's).
pub const COOKIE_NAME: &str = "conda-store-auth";

/// How long a TokenReview answer is trusted.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// At most this many TokenReview answers are kept.
const REVIEW_CACHE_MAX: usize = 10_000;
/// TokenReviews of tokens not seen before, at most per second (a burst of as many is allowed):
/// every unknown bearer token would otherwise cost the API server a request.
const REVIEWS_PER_SECOND: f64 = 20.0;
/// How long a successful password check is remembered (argon2 costs tens of milliseconds, and
/// HTTP Basic clients send the password with every request).
const PASSWORD_TTL: Duration = Duration::from_secs(60);
const PASSWORD_CACHE_MAX: usize = 10_000;
/// The `src` claim of tokens issued to people of the users file.
const SRC_USERS: &str = "users";

/// A TokenReview's answer (the caller, or none for a refused token) and when it came.
type Review = (Option<Caller>, Instant);

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Authentication settings and state.
pub struct Authenticator {
    /// Signs this gateway's tokens.
    pub signer: Signer,
    /// People who may log in with a password.
    pub users: UsersFile,
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
    /// Browser sign-in through identity providers.
    pub sso: super::sso::Sso,
    /// Bindings people earn by their groups at the identity provider.
    pub group_bindings: Vec<super::groups::GroupBinding>,
    /// Lifetime of a login session and the default of an API token, seconds.
    pub session_seconds: i64,
    /// Failed password logins per user name.
    pub throttle: Throttle,
    /// Ids of revoked tokens that have not expired yet.
    revoked: RwLock<HashSet<String>>,
    reviews: Mutex<HashMap<[u8; 32], Review>>,
    review_budget: Mutex<Bucket>,
    /// Keys the remembered password checks (a random key of this process: the map holds no
    /// digest of a password that could be attacked offline).
    password_key: hmac::Key,
    passwords: Mutex<HashMap<Vec<u8>, Instant>>,
}

impl Authenticator {
    /// An authenticator; Kubernetes tokens are reviewed when `token_review` is given.
    pub fn new(
        signer: Signer,
        users: UsersFile,
        token_review: Option<kube::Client>,
    ) -> Authenticator {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .expect("the system's random source");
        Authenticator {
            signer,
            users,
            own_namespace_role: Some(Role::Admin),
            authenticated_bindings: Vec::new(),
            anonymous_bindings: Vec::new(),
            token_review,
            oidc: None,
            group_bindings: Vec::new(),
            sso: super::sso::Sso::default(),
            session_seconds: 24 * 3600,
            throttle: Throttle::default(),
            revoked: RwLock::new(HashSet::new()),
            reviews: Mutex::new(HashMap::new()),
            review_budget: Mutex::new(Bucket {
                tokens: REVIEWS_PER_SECOND,
                at: Instant::now(),
            }),
            password_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            passwords: Mutex::new(HashMap::new()),
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
            from_users_file: via == Via::Login,
        }
    }

    /// `caller` with the bindings their groups at the identity provider earn.
    pub fn with_groups(&self, mut caller: Caller, groups: &[String]) -> Caller {
        caller
            .bindings
            .extend(super::groups::bindings(&self.group_bindings, groups));
        caller
    }

    /// The caller a token's claims describe, if the token still stands: not revoked, and its
    /// holder still in the users file when that is where they came from.
    pub fn from_claims(&self, c: Claims) -> Result<Caller, ApiError> {
        if c.jti
            .as_ref()
            .is_some_and(|j| self.revoked.read().expect("not poisoned").contains(j))
        {
            return Err(ApiError::unauthorized("the token has been revoked"));
        }
        let username = c.sub.clone().unwrap_or_else(|| "token".into());
        let from_users_file = c.src.as_deref() == Some(SRC_USERS);
        if from_users_file && self.users.current().get(&username).is_none() {
            return Err(ApiError::unauthorized(
                "the token's user no longer exists here",
            ));
        }
        if c.session {
            let mut caller = self.user(Via::Login, &username, &c.primary_namespace, Some(c.exp));
            caller.from_users_file = from_users_file;
            return Ok(self.with_groups(caller, &c.groups));
        }
        let mut bindings = Vec::new();
        for (pattern, roles) in &c.role_bindings {
            for r in roles {
                if let Ok(role) = r.parse::<Role>() {
                    bindings.push((pattern.clone(), role));
                }
            }
        }
        Ok(Caller {
            via: Via::Token,
            username: Some(username),
            primary_namespace: c.primary_namespace,
            bindings,
            expires: Some(c.exp),
            from_users_file,
        })
    }

    /// A session token for a person of the users file, ending at `limit` if that comes first.
    pub fn session_token(
        &self,
        username: &str,
        primary: &str,
        now: i64,
        limit: Option<i64>,
    ) -> String {
        let exp = (now + self.session_seconds).min(limit.unwrap_or(i64::MAX));
        self.signer.sign(&Claims {
            sub: Some(username.into()),
            exp,
            primary_namespace: primary.into(),
            session: true,
            src: Some(SRC_USERS.into()),
            jti: Some(new_token_id()),
            ..Default::default()
        })
    }

    /// A session token for a person an identity provider (`src`) vouched for, with their
    /// groups there.
    pub fn provider_session_token(
        &self,
        username: &str,
        src: &str,
        groups: Vec<String>,
        now: i64,
    ) -> String {
        self.signer.sign(&Claims {
            sub: Some(username.into()),
            exp: now + self.session_seconds,
            primary_namespace: username.into(),
            session: true,
            src: Some(src.into()),
            jti: Some(new_token_id()),
            groups,
            ..Default::default()
        })
    }

    /// The `src` claim of tokens issued to `caller`.
    pub fn source_of(caller: &Caller) -> Option<String> {
        caller.from_users_file.then(|| SRC_USERS.to_string())
    }

    /// Revokes the token with claims `c` (until its expiry) in this process; the caller
    /// records it in the index for the other replicas.
    pub fn revoke_locally(&self, jti: &str) {
        self.revoked
            .write()
            .expect("not poisoned")
            .insert(jti.to_string());
    }

    /// Replaces the revoked set with the index's (which every replica writes).
    pub fn set_revoked(&self, jtis: impl IntoIterator<Item = String>) {
        *self.revoked.write().expect("not poisoned") = jtis.into_iter().collect();
    }

    /// The claims of the gateway token in these headers (Bearer or cookie), if valid.
    pub fn presented_claims(&self, headers: &HeaderMap) -> Option<Claims> {
        let now = jiff::Timestamp::now().as_second();
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        let token = bearer.or_else(|| cookie(headers, COOKIE_NAME))?;
        self.signer.verify(token, now).ok()
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
                    .map_err(|e| ApiError::unauthorized(e.to_string()))
                    .and_then(|c| self.from_claims(c)),
                "bearer"
                    if self
                        .oidc
                        .as_ref()
                        .is_some_and(|o| o.claims_issuer(credentials)) =>
                {
                    let oidc = self.oidc.as_ref().expect("checked");
                    let (who, exp) = oidc
                        .verify(credentials, now)
                        .await
                        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
                    let caller = self.user(Via::Oidc, &who.username, &who.username, Some(exp));
                    Ok(self.with_groups(caller, &who.groups))
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
                }
                other => Err(ApiError::unauthorized(format!(
                    "the authorization scheme {other:?} is not supported; use Bearer or Basic"
                ))),
            };
        }
        // A stale, revoked or foreign cookie is ignored: the caller is anonymous until they
        // log in again.
        if let Some(token) = cookie(headers, COOKIE_NAME)
            && let Ok(c) = self.signer.verify(token, now)
            && let Ok(caller) = self.from_claims(c)
        {
            return Ok(caller);
        }
        Ok(Caller::anonymous(self.anonymous_bindings.clone()))
    }

    /// The person with this user name and password: 401 when they are not, 429 after too
    /// many failed attempts for the name.
    pub fn password_login(&self, username: &str, password: &str) -> Result<Caller, ApiError> {
        let users = self.users.current();
        let remembered = self.remembered(username, password);
        let user = if remembered.is_some() {
            users.get(username)
        } else {
            if !self.throttle.allowed(username) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins for this user name; try again in a minute",
                ));
            }
            let user = users.check(username, password);
            self.throttle.record(username, user.is_some());
            if user.is_some() {
                self.remember(username, password);
            }
            user
        };
        let user = user.ok_or_else(|| ApiError::unauthorized("wrong user name or password"))?;
        let primary = user.primary_namespace.as_deref().unwrap_or(&user.username);
        Ok(self.user(Via::Login, &user.username, primary, None))
    }

    fn password_mac(&self, username: &str, password: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.password_key);
        ctx.update(username.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    fn remembered(&self, username: &str, password: &str) -> Option<()> {
        let mac = self.password_mac(username, password);
        let map = self.passwords.lock().expect("not poisoned");
        map.get(&mac)
            .filter(|at| at.elapsed() < PASSWORD_TTL)
            .map(|_| ())
    }

    fn remember(&self, username: &str, password: &str) {
        let mac = self.password_mac(username, password);
        let mut map = self.passwords.lock().expect("not poisoned");
        if map.len() >= PASSWORD_CACHE_MAX {
            map.retain(|_, at| at.elapsed() < PASSWORD_TTL);
            if map.len() >= PASSWORD_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(mac, Instant::now());
    }

    /// Whether a TokenReview of a token not seen before may be made now.
    fn may_review(&self) -> bool {
        let mut b = self.review_budget.lock().expect("not poisoned");
        let elapsed = b.at.elapsed().as_secs_f64();
        b.at = Instant::now();
        b.tokens = (b.tokens + elapsed * REVIEWS_PER_SECOND).min(REVIEWS_PER_SECOND);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
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
        if !self.may_review() {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many unknown bearer tokens at once; try again shortly",
            ));
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
                Some(self.user(Via::Kubernetes, &user, &primary, jwt_exp(token)))
            }
            _ => None,
        };
        let mut reviews = self.reviews.lock().expect("not poisoned");
        if reviews.len() >= REVIEW_CACHE_MAX {
            reviews.retain(|_, (_, at)| at.elapsed() < REVIEW_TTL);
            if reviews.len() >= REVIEW_CACHE_MAX {
                reviews.clear();
            }
        }
        reviews.insert(key, (caller.clone(), Instant::now()));
        caller.ok_or_else(|| ApiError::unauthorized("the bearer token is not valid"))
    }
}

/// The `exp` of a JWT the API server has just vouched for (a bound ServiceAccount token has
/// one; legacy Secret tokens have none).
fn jwt_exp(token: &str) -> Option<i64> {
    let body = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(body.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_i64()
}

/// A fresh random token id.
pub fn new_token_id() -> String {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .expect("the system's random source");
    hex::encode(id)
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
