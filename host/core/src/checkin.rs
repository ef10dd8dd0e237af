//! Check-in tokens: the `checkin_jwt` a new VM's startup script presents to
//! `POST /api/v1/servers/checkin`. An HS256 JSON Web Token (signed and checked by the
//! `jsonwebtoken` crate), signed by the broker with a key only it holds, naming one server,
//! expiring, and single-use (its id is kept on the server record and cleared by the
//! check-in it authorises).
//!
//! Time is the caller's: [`verify`] takes `now` and checks `exp` itself; the crate's own
//! clock is never consulted (its `exp` and `nbf` checks are off).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The audience of check-in tokens (no other token of ours is accepted for check-in).
const AUDIENCE: &str = "zonebroker:server-checkin";

/// The one algorithm of check-in tokens.
const ALGORITHM: Algorithm = Algorithm::HS256;

/// What a check-in token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The server (its id).
    pub sub: String,
    /// The token's own id: single use.
    pub jti: String,
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token")]
    Malformed,
    #[error("the signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("not a check-in token")]
    WrongAudience,
}

/// A signed token for `server`, valid for `lifetime_secs` from `now_secs`, with id `jti`.
///
/// # Panics
/// If `key` is empty (the store's check-in key is 32 random bytes).
pub fn issue(key: &[u8], server: &str, jti: &str, now_secs: u64, lifetime_secs: u64) -> String {
    let claims = Claims {
        sub: server.to_string(),
        jti: jti.to_string(),
        aud: AUDIENCE.to_string(),
        iat: now_secs,
        exp: now_secs + lifetime_secs,
    };
    jsonwebtoken::encode(
        &Header::new(ALGORITHM),
        &claims,
        &EncodingKey::from_secret(key).expect("a check-in key is never empty"),
    )
    .expect("HS256 signs any claims that serialize")
}

/// The claims of `token`, if it is ours, intact, a check-in token and not expired at
/// `now_secs`. (Whether its server still expects it is the caller's question.)
pub fn verify(key: &[u8], token: &str, now_secs: u64) -> Result<Claims, TokenError> {
    let claims: Claims = signed_payload(key, token, Some(AUDIENCE))?;
    if now_secs >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The payload of `token` as `C`, if its header names HS256 and its signature is `key`'s,
/// and (when `audience` is given) its `aud` is `audience`. Times are not checked here.
fn signed_payload<C: DeserializeOwned>(
    key: &[u8],
    token: &str,
    audience: Option<&str>,
) -> Result<C, TokenError> {
    // Only our algorithm: never `none` (which the crate does not parse: that would read as
    // a malformed token), never something the token chooses.
    if header_algorithm(token)?.as_deref() != Some("HS256") {
        return Err(TokenError::BadSignature);
    }
    let mut validation = Validation::new(ALGORITHM);
    // Our clock, not the crate's: `verify` checks `exp` against the `now` it is given.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // Which claims must be there is the payload type's to say.
    validation.required_spec_claims.clear();
    match audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    // No token is signed with an empty key.
    let key = DecodingKey::from_secret(key).map_err(|_| TokenError::BadSignature)?;
    jsonwebtoken::decode::<C>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            _ => TokenError::Malformed,
        })
}

/// The `alg` a token's header names, if it is three dot-separated parts with a JSON
/// header.
fn header_algorithm(token: &str) -> Result<Option<String>, TokenError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    Ok(header["alg"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let token = issue(KEY, "server-1", "jti-1", 1000, 600);
        let claims = verify(KEY, &token, 1599).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.jti.as_str(), claims.exp),
            ("server-1", "jti-1", 1600)
        );
        assert_eq!(verify(KEY, &token, 1600), Err(TokenError::Expired));
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "URL- and shell-safe"
        );
    }

    #[test]
    fn forged_tampered_and_malformed_tokens_are_refused() {
        let token = issue(KEY, "server-1", "jti-1", 1000, 600);
        assert_eq!(
            verify(b"another key", &token, 1001),
            Err(TokenError::BadSignature)
        );
        // Another server's id in the payload, the old signature.
        let forged_payload = b64url(br#"{"sub":"server-2","jti":"jti-1","aud":"zonebroker:server-checkin","iat":1000,"exp":9999}"#);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verify(KEY, &forged, 1001), Err(TokenError::BadSignature));
        // `alg: none`.
        let none = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(verify(KEY, &none, 1001), Err(TokenError::BadSignature));
        for garbage in ["", "a.b", "a.b.c.d", "!!.??.**", "e30.e30.e30"] {
            assert!(verify(KEY, garbage, 1001).is_err(), "{garbage}");
        }
    }

    /// RFC 7515 Appendix A.1: the HS256 JWS example, its key (a JWK `k`) and its
    /// serialization, as published.
    const RFC7515_A1_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
        .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
        .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    #[test]
    fn the_rfc_7515_hs256_example_verifies_and_a_tampered_one_does_not() {
        let key = URL_SAFE_NO_PAD.decode(RFC7515_A1_KEY).unwrap();
        let token = RFC7515_A1_TOKEN.replace(char::is_whitespace, "");
        // Its `exp` (2011-03-22) is long past: only our clock would refuse it, and this path
        // checks no time, so the crate's clock is not consulted.
        let payload: serde_json::Value = signed_payload(&key, &token, None).unwrap();
        assert_eq!(payload["iss"], "joe");
        assert_eq!(payload["exp"], 1_300_819_380);
        assert_eq!(payload["http://example.com/is_root"], true);

        let parts: Vec<&str> = token.split('.').collect();
        let other_payload = b64url(
            b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":false}",
        );
        let tampered = format!("{}.{other_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            signed_payload::<serde_json::Value>(&key, &tampered, None),
            Err(TokenError::BadSignature)
        );
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64url(&signature));
        assert_eq!(
            signed_payload::<serde_json::Value>(&key, &flipped, None),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signed_payload::<serde_json::Value>(b"another key", &token, None),
            Err(TokenError::BadSignature)
        );
        // Through `verify`: intact, but without the claims of a check-in token.
        assert_eq!(verify(&key, &token, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn expiry_is_judged_by_the_given_clock_only() {
        // Expired by any wall clock, valid at the `now` given.
        let token = issue(KEY, "server-1", "jti-1", 1000, 600);
        assert_eq!(verify(KEY, &token, 1000).unwrap().exp, 1600);
        // Far in the future by any wall clock, expired at the `now` given.
        let token = issue(KEY, "server-1", "jti-1", 4_000_000_000, 600);
        assert_eq!(verify(KEY, &token, 4_000_000_600), Err(TokenError::Expired));
    }

    #[test]
    fn another_audience_is_refused() {
        let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload =
            b64url(br#"{"sub":"server-1","jti":"j","aud":"someone-else","iat":1000,"exp":9999}"#);
        let signing_input = format!("{header}.{payload}");
        let signature = {
            use hmac::{Hmac, Mac};
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
            mac.update(signing_input.as_bytes());
            b64url(&mac.finalize().into_bytes())
        };
        let token = format!("{signing_input}.{signature}");
        assert_eq!(verify(KEY, &token, 1001), Err(TokenError::WrongAudience));
    }
}
