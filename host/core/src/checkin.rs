//! Check-in tokens: the `checkin_jwt` a new VM's startup script presents to
//! `POST /api/v1/servers/checkin`. An HS256 JSON Web Token, signed by the broker with a key
//! only it holds, naming one server, expiring, and single-use (its id is kept on the server
//! record and cleared by the check-in it authorises).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The audience of check-in tokens (no other token of ours is accepted for check-in).
const AUDIENCE: &str = "zonebroker:server-checkin";

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

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length")
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// A signed token for `server`, valid for `lifetime_secs` from `now_secs`, with id `jti`.
pub fn issue(key: &[u8], server: &str, jti: &str, now_secs: u64, lifetime_secs: u64) -> String {
    let claims = Claims {
        sub: server.to_string(),
        jti: jti.to_string(),
        aud: AUDIENCE.to_string(),
        iat: now_secs,
        exp: now_secs + lifetime_secs,
    };
    let signing_input = format!(
        "{}.{}",
        b64url(HEADER.as_bytes()),
        b64url(&serde_json::to_vec(&claims).expect("claims serialize"))
    );
    let mut mac = mac(key);
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// The claims of `token`, if it is ours, intact, a check-in token and not expired at
/// `now_secs`. (Whether its server still expects it is the caller's question.)
pub fn verify(key: &[u8], token: &str, now_secs: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = unb64url(header).ok_or(TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    // Only our algorithm: never `none`, never something the token chooses.
    if header["alg"] != "HS256" {
        return Err(TokenError::BadSignature);
    }
    let signature = unb64url(signature).ok_or(TokenError::Malformed)?;
    let mut mac = mac(key);
    mac.update(header_part(token).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&unb64url(payload).ok_or(TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    if claims.aud != AUDIENCE {
        return Err(TokenError::WrongAudience);
    }
    if now_secs >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// `header.payload`: what the signature covers.
fn header_part(token: &str) -> &str {
    &token[..token.rfind('.').unwrap_or(0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

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

    #[test]
    fn base64url_round_trips() {
        for bytes in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            &[0xff, 0xfe, 0x00, 0x10],
        ] {
            assert_eq!(unb64url(&b64url(bytes)).unwrap(), bytes);
        }
    }
}
