//! HS256 JSON Web Tokens, as conda-store issues them: claims `exp`, `primary_namespace`,
//! `role_bindings` (pattern → list of roles), plus `sub` (the user) and `session` (a login
//! cookie rather than an API token).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with JSON inside.
    #[error("the token is malformed")]
    Malformed,
    /// Signed with another algorithm than HS256.
    #[error("the token's algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    Signature,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
}

/// The claims of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// The holder's primary namespace.
    pub primary_namespace: String,
    /// Pattern → roles.
    #[serde(default)]
    pub role_bindings: BTreeMap<String, Vec<String>>,
    /// A login session: the holder's rights are evaluated afresh on each request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,
    /// Where the holder's identity came from (`users`: the users file, whose removal of the
    /// user ends the token); absent for sources that cannot be asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The token's id, by which it can be revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A session's groups at the identity provider it signed in with (mapped to bindings by
    /// the configuration in force at each request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

impl Signer {
    /// A signer with `secret`.
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key, for other MACs of this gateway (each with its own domain prefix).
    pub fn key(&self) -> &hmac::Key {
        &self.key
    }

    /// The token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = B64.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signing_input = format!("{header}.{body}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(tag.as_ref()))
    }

    /// The claims of a valid, unexpired token signed by this signer.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(b), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let alg = header_alg(h).ok_or(JwtError::Malformed)?;
        if alg != "HS256" {
            return Err(JwtError::Algorithm(alg));
        }
        let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        hmac::verify(&self.key, format!("{h}.{b}").as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)?;
        let body = B64.decode(b).map_err(|_| JwtError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| JwtError::Malformed)?;
        if claims.exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

/// The `alg` of a token's header, if it has a readable one.
pub fn header_alg(header_b64: &str) -> Option<String> {
    let bytes = B64.decode(header_b64).ok()?;
    serde_json::from_slice::<Header>(&bytes).ok().map(|h| h.alg)
}

/// Whether `token` looks like one of this gateway's tokens (an HS256 JWT) rather than, say, a
/// Kubernetes ServiceAccount token (RS256).
pub fn is_hs256(token: &str) -> bool {
    token
        .split('.')
        .next()
        .and_then(header_alg)
        .is_some_and(|a| a == "HS256")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Some("alice".into()),
            exp,
            primary_namespace: "alice".into(),
            role_bindings: BTreeMap::from([("alice/*".into(), vec!["admin".into()])]),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = Signer::new(b"secret");
        let t = s.sign(&claims(2_000));
        assert!(is_hs256(&t));
        assert_eq!(s.verify(&t, 1_000).unwrap(), claims(2_000));
        assert_eq!(s.verify(&t, 2_000), Err(JwtError::Expired));
        assert_eq!(
            Signer::new(b"other").verify(&t, 1_000),
            Err(JwtError::Signature)
        );
        // A changed body breaks the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(2_000);
        c.role_bindings.insert("*/*".into(), vec!["admin".into()]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(serde_json::to_vec(&c).unwrap()),
            parts[2]
        );
        assert_eq!(s.verify(&forged, 1_000), Err(JwtError::Signature));
        // `alg: none` is refused.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(
            s.verify(&none, 1_000),
            Err(JwtError::Algorithm("none".into()))
        );
        assert_eq!(s.verify("abc", 1_000), Err(JwtError::Malformed));
        assert_eq!(s.verify("a.b.c", 1_000), Err(JwtError::Malformed));
    }
}
