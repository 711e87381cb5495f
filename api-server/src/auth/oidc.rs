//! OpenID Connect: an ID token of the organisation's identity provider, presented as a bearer
//! token or received at the end of a browser sign-in (`auth::sso`), verified against the
//! issuer's published keys (RS256), its audience (this gateway's client id), expiry and, for a
//! sign-in, its nonce. The user name and groups come from claims.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde::Deserialize;
use serde_json::Value;

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT.
    #[error("the ID token is malformed")]
    Malformed,
    /// Not RS256, or a key the issuer does not publish.
    #[error("the ID token is not signed with a key of the issuer")]
    UnknownKey,
    /// The signature does not match.
    #[error("the ID token's signature is not valid")]
    Signature,
    /// Wrong issuer, audience or time.
    #[error("the ID token is not valid here: {0}")]
    Claims(String),
    /// The issuer's keys could not be fetched.
    #[error("the identity provider's keys could not be read: {0}")]
    Provider(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kid: Option<String>,
    kty: String,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// Keys are fetched again at most this often, and when a token names an unknown one.
const KEYS_TTL: Duration = Duration::from_secs(600);
const MIN_REFRESH: Duration = Duration::from_secs(10);

type Keys = HashMap<String, (Vec<u8>, Vec<u8>)>;

/// The issuer's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    /// Where the browser is sent to sign in.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// Where a code is exchanged for tokens.
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// Where the claims an ID token leaves out are read with the access token.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

/// Who an ID token (and the userinfo endpoint) says the person is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (a valid namespace name: it is their primary namespace).
    pub username: String,
    /// Their groups at the provider.
    pub groups: Vec<String>,
}

/// An OIDC issuer this gateway trusts.
pub struct Oidc {
    issuer: String,
    audience: String,
    username_claim: String,
    groups_claim: String,
    http: reqwest::Client,
    keys: tokio::sync::Mutex<Option<(Instant, Keys)>>,
    endpoints: tokio::sync::Mutex<Option<(Instant, Endpoints)>>,
}

impl Oidc {
    /// Trusts ID tokens of `issuer` for `audience`, naming users by `username_claim` and
    /// reading their groups from `groups_claim`.
    pub fn new(issuer: &str, audience: &str, username_claim: &str, groups_claim: &str) -> Oidc {
        Oidc {
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            username_claim: username_claim.to_string(),
            groups_claim: groups_claim.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            keys: tokio::sync::Mutex::new(None),
            endpoints: tokio::sync::Mutex::new(None),
        }
    }

    /// The issuer, as configured (no trailing `/`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// This gateway's client id at the issuer.
    pub fn client_id(&self) -> &str {
        &self.audience
    }

    /// The issuer's endpoints (its discovery document, read again every ten minutes).
    pub async fn endpoints(&self) -> Result<Endpoints, OidcError> {
        let mut slot = self.endpoints.lock().await;
        if let Some((at, e)) = slot.as_ref()
            && at.elapsed() < KEYS_TTL
        {
            return Ok(e.clone());
        }
        let doc = self
            .get_json(&format!("{}/.well-known/openid-configuration", self.issuer))
            .await?;
        let e: Endpoints = serde_json::from_value(doc)
            .map_err(|e| OidcError::Provider(format!("the discovery document: {e}")))?;
        *slot = Some((Instant::now(), e.clone()));
        Ok(e)
    }

    /// The person a set of verified claims names: the user name claim, and the groups claim
    /// (a list of names, or one name).
    pub fn identity(&self, claims: &Value) -> Result<Identity, OidcError> {
        let user = claims
            .get(&self.username_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::Claims(format!("no {} claim", self.username_claim)))?;
        conda_store_crds::naming::validate_conda_name(user)
            .map_err(|e| OidcError::Claims(format!("user name: {e}")))?;
        let groups = match claims.get(&self.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(g)) => vec![g.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            username: user.to_string(),
            groups,
        })
    }

    /// Whether `claims` name the person (a user name claim is there), or the userinfo
    /// endpoint must be asked.
    pub fn names_user(&self, claims: &Value) -> bool {
        claims.get(&self.username_claim).is_some()
    }

    /// The claims of the userinfo endpoint for `access_token`, when they are about `sub`.
    pub async fn userinfo(
        &self,
        endpoint: &str,
        access_token: &str,
        sub: &str,
    ) -> Result<Value, OidcError> {
        let resp = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("userinfo: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::Provider(format!("userinfo: {}", resp.status())));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        let info: Value = serde_json::from_slice(&bytes)
            .map_err(|e| OidcError::Provider(format!("userinfo: {e}")))?;
        // OpenID Connect Core 5.3.2: the answer must be about the ID token's subject.
        if info.get("sub").and_then(Value::as_str) != Some(sub) {
            return Err(OidcError::Claims(
                "the userinfo answer is about someone else".into(),
            ));
        }
        Ok(info)
    }

    /// Whether `token` claims to come from this issuer (unverified: only to route it here).
    pub fn claims_issuer(&self, token: &str) -> bool {
        token
            .split('.')
            .nth(1)
            .and_then(|b| B64.decode(b).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| {
                c.get("iss")
                    .and_then(Value::as_str)
                    .map(|i| i.trim_end_matches('/') == self.issuer)
            })
            .unwrap_or(false)
    }

    /// The person a valid bearer ID token names and when the token expires.
    pub async fn verify(&self, token: &str, now: i64) -> Result<(Identity, i64), OidcError> {
        let claims = self.verify_claims(token, now, None).await?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok((self.identity(&claims)?, exp))
    }

    /// The claims of a valid ID token: signed by the issuer, for this gateway, unexpired, and
    /// carrying `nonce` when one is given (the sign-in that asked for it).
    pub async fn verify_claims(
        &self,
        token: &str,
        now: i64,
        nonce: Option<&str>,
    ) -> Result<Value, OidcError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(OidcError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(OidcError::Malformed)?;
        if header.alg != "RS256" {
            return Err(OidcError::UnknownKey);
        }
        let sig = B64.decode(s).map_err(|_| OidcError::Malformed)?;
        let kid = header.kid.unwrap_or_default();
        let key = match self.key(&kid, false).await? {
            Some(k) => k,
            None => self.key(&kid, true).await?.ok_or(OidcError::UnknownKey)?,
        };
        RsaPublicKeyComponents {
            n: &key.0,
            e: &key.1,
        }
        .verify(
            &RSA_PKCS1_2048_8192_SHA256,
            format!("{h}.{b}").as_bytes(),
            &sig,
        )
        .map_err(|_| OidcError::Signature)?;
        let claims: Value = B64
            .decode(b)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(OidcError::Malformed)?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if iss.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Claims(format!("issuer {iss:?}")));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(OidcError::Claims(
                "not issued for this gateway (aud)".into(),
            ));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now {
            return Err(OidcError::Claims("expired".into()));
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|nbf| nbf > now + 60)
        {
            return Err(OidcError::Claims("not valid yet".into()));
        }
        if let Some(n) = nonce
            && claims.get("nonce").and_then(Value::as_str) != Some(n)
        {
            return Err(OidcError::Claims(
                "the nonce is not the one this sign-in sent".into(),
            ));
        }
        Ok(claims)
    }

    async fn key(&self, kid: &str, refresh: bool) -> Result<Option<(Vec<u8>, Vec<u8>)>, OidcError> {
        let mut slot = self.keys.lock().await;
        let stale = match slot.as_ref() {
            None => true,
            Some((at, _)) if refresh => at.elapsed() > MIN_REFRESH,
            Some((at, _)) => at.elapsed() > KEYS_TTL,
        };
        if stale {
            *slot = Some((Instant::now(), self.fetch().await?));
        }
        let keys = &slot.as_ref().expect("just filled").1;
        Ok(keys.get(kid).cloned().or_else(|| {
            // A provider with one key may leave `kid` out.
            (kid.is_empty() && keys.len() == 1)
                .then(|| keys.values().next().cloned())
                .flatten()
        }))
    }

    async fn get_json(&self, url: &str) -> Result<Value, OidcError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError::Provider(format!("{url}: {}", resp.status())));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }

    async fn fetch(&self) -> Result<Keys, OidcError> {
        let jwks_uri =
            self.endpoints().await?.jwks_uri.ok_or_else(|| {
                OidcError::Provider("no jwks_uri in the discovery document".into())
            })?;
        let jwks = self.get_json(&jwks_uri).await?;
        let mut keys = HashMap::new();
        for k in jwks
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Ok(k) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if k.kty != "RSA" {
                continue;
            }
            if let (Some(n), Some(e)) = (
                k.n.and_then(|n| B64.decode(n).ok()),
                k.e.and_then(|e| B64.decode(e).ok()),
            ) {
                keys.insert(k.kid.unwrap_or_default(), (n, e));
            }
        }
        Ok(keys)
    }
}
