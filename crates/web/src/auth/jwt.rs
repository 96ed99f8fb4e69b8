//! Just enough JOSE for OpenID Connect ID tokens: a compact JWS signed with
//! RS256 or ES256 (what Google and common providers use), checked against a
//! JWK Set with `ring`, which the tree already has for TLS.
//!
//! Why not `openidconnect` or `jsonwebtoken`: the first pulls an OAuth
//! framework plus RSA/EC/EdDSA implementations and chrono; the second (v10)
//! pulls aws-lc or the RustCrypto RSA stack. ID token checking is small and
//! strict here: an explicit algorithm allow-list tied to the key type (no
//! `none`, no HMAC, no key confusion), the key picked by `kid`, then the
//! claims checked by the caller (`oidc.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    UnsupportedAlgorithm(String),
    NoMatchingKey,
    BadSignature,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Malformed => f.write_str("malformed token"),
            JwtError::UnsupportedAlgorithm(a) => write!(f, "unsupported algorithm {a:?}"),
            JwtError::NoMatchingKey => f.write_str("no key of the provider matches the token"),
            JwtError::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    // RSA
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    // EC
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed)
}

/// The key type an algorithm needs.
fn kty_of(alg: &str) -> Option<&'static str> {
    match alg {
        "RS256" => Some("RSA"),
        "ES256" => Some("EC"),
        _ => None,
    }
}

impl JwkSet {
    /// Candidate keys for a header: same `kid` when the token names one,
    /// right type, not marked for another algorithm or for encryption.
    fn candidates<'a>(&'a self, alg: &'a str, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        let kty = kty_of(alg);
        self.keys.iter().filter(move |k| {
            Some(k.kty.as_str()) == kty
                && k.alg.as_deref().is_none_or(|a| a == alg)
                && k.use_.as_deref().is_none_or(|u| u == "sig")
                && (kid.is_none() || k.kid.as_deref() == kid)
        })
    }

    /// Does the set hold a key with this id? (Else the provider may have
    /// rotated keys and the set should be fetched again.)
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The `kid` a token names, if it parses that far.
pub fn token_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    serde_json::from_slice::<Header>(&b64(header).ok()?).ok()?.kid
}

fn verify_with(key: &Jwk, alg: &str, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    match alg {
        "RS256" => {
            let n = b64(key.n.as_deref().ok_or(JwtError::Malformed)?)?;
            let e = b64(key.e.as_deref().ok_or(JwtError::Malformed)?)?;
            signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .map_err(|_| JwtError::BadSignature)
        }
        "ES256" => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(JwtError::NoMatchingKey);
            }
            let x = b64(key.x.as_deref().ok_or(JwtError::Malformed)?)?;
            let y = b64(key.y.as_deref().ok_or(JwtError::Malformed)?)?;
            if x.len() != 32 || y.len() != 32 {
                return Err(JwtError::Malformed);
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                .verify(message, sig)
                .map_err(|_| JwtError::BadSignature)
        }
        other => Err(JwtError::UnsupportedAlgorithm(other.to_string())),
    }
}

/// Verifies the signature of a compact JWS against `keys` and returns its
/// payload (the claims JSON). Claims are not checked here.
pub fn verify(token: &str, keys: &JwkSet) -> Result<serde_json::Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    if header.crit.is_some() {
        // No extension is understood, so none may be critical (RFC 7515 4.1.11).
        return Err(JwtError::Malformed);
    }
    if kty_of(&header.alg).is_none() {
        return Err(JwtError::UnsupportedAlgorithm(header.alg));
    }
    let sig = b64(s)?;
    let message = &token.as_bytes()[..h.len() + 1 + p.len()];
    let mut tried = false;
    for key in keys.candidates(&header.alg, header.kid.as_deref()) {
        tried = true;
        if verify_with(key, &header.alg, message, &sig).is_ok() {
            return serde_json::from_slice(&b64(p)?).map_err(|_| JwtError::Malformed);
        }
    }
    Err(if tried { JwtError::BadSignature } else { JwtError::NoMatchingKey })
}

#[cfg(test)]
pub mod testing {
    //! Signing for tests (the provider side): ES256 keys made with ring.
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    pub struct TestKey {
        pub kid: String,
        pair: EcdsaKeyPair,
    }

    impl TestKey {
        pub fn generate(kid: &str) -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            TestKey { kid: kid.to_string(), pair }
        }

        pub fn jwk(&self) -> serde_json::Value {
            let point = self.pair.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
        }

        pub fn sign(&self, header: serde_json::Value, claims: &serde_json::Value) -> String {
            let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
            let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
            let message = format!("{h}.{p}");
            let sig = self.pair.sign(&SystemRandom::new(), message.as_bytes()).unwrap();
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }

        pub fn sign_es256(&self, claims: &serde_json::Value) -> String {
            self.sign(serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}), claims)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestKey;
    use super::*;
    use serde_json::json;

    fn set(keys: &[&TestKey]) -> JwkSet {
        serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})).unwrap()
    }

    #[test]
    fn es256_verifies_and_refuses_other_keys_none_and_hmac() {
        let good = TestKey::generate("k1");
        let other = TestKey::generate("k2");
        let keys = set(&[&good]);
        let claims = json!({"sub": "abc"});
        assert_eq!(verify(&good.sign_es256(&claims), &keys).unwrap()["sub"], "abc");
        // Another key claiming the same kid.
        let forged = TestKey::generate("k1");
        assert_eq!(verify(&forged.sign_es256(&claims), &keys), Err(JwtError::BadSignature));
        assert_eq!(verify(&other.sign_es256(&claims), &keys), Err(JwtError::NoMatchingKey));
        // alg none / HS256 are never accepted.
        let token = good.sign_es256(&claims);
        let body = token.split('.').nth(1).unwrap();
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert_eq!(verify(&none, &keys), Err(JwtError::UnsupportedAlgorithm("none".into())));
        let hs = good.sign(json!({"alg": "HS256", "kid": "k1"}), &claims);
        assert_eq!(verify(&hs, &keys), Err(JwtError::UnsupportedAlgorithm("HS256".into())));
        // Tampered payload.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        assert_eq!(verify(&parts.join("."), &keys), Err(JwtError::BadSignature));
        assert_eq!(verify("a.b", &keys), Err(JwtError::Malformed));
        assert_eq!(token_kid(&token).as_deref(), Some("k1"));
    }
}
