//! Bearer-token authentication, as extractors: a handler that takes [`Admin`] runs only for
//! a request with the admin token, one that takes [`AgentAuth`] only with the agent
//! registration token.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;

/// A bearer token (admin or agent registration). Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Where the admin token came from.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenSource {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

/// The file in the data directory holding a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The file in the data directory holding a generated agent registration token.
pub const AGENT_TOKEN_FILE: &str = "agent-token";

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {0} is empty")]
    Empty(PathBuf),
    #[error("cannot generate a random token: {0}")]
    Random(String),
}

impl Token {
    /// The token from `env_value` (e.g. `ZONEBROKER_ADMIN_TOKEN`) if set, else the one in
    /// `data_dir/file`, else a new random one written there with mode 0600.
    pub fn load_or_generate(
        env_value: Option<String>,
        data_dir: &Path,
        file: &str,
    ) -> Result<(Token, TokenSource), TokenError> {
        if let Some(value) = env_value.filter(|v| !v.is_empty()) {
            return Ok((Token(value), TokenSource::Environment));
        }
        let path = data_dir.join(file);
        let (value, generated) = load_or_generate_secret(&path)?;
        let source = if generated {
            TokenSource::Generated(path)
        } else {
            TokenSource::File(path)
        };
        Ok((Token(value), source))
    }

    /// A token with this value (tests, embedding).
    pub fn new(value: impl Into<String>) -> Self {
        Token(value.into())
    }

    /// Whether `offered` is this token, compared in constant time.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), offered.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Read the secret at `path`, or create it (mode 0600) with 32 random bytes in hex.
/// Answers whether it was generated.
pub fn load_or_generate_secret(path: &Path) -> Result<(String, bool), TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(value) => {
            let value = value.trim().to_string();
            if value.is_empty() {
                return Err(TokenError::Empty(path.to_path_buf()));
            }
            Ok((value, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
            let value = hex::encode(bytes);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(value.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((value, true))
        }
        Err(e) => Err(io(e)),
    }
}

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_bearer(parts, &state.admin_token, "admin token").map(|()| Admin)
    }
}

/// Proof that the request carried the agent registration token.
pub struct AgentAuth;

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        check_bearer(parts, &state.agent_token, "agent registration token").map(|()| AgentAuth)
    }
}

/// The bearer token a new server presents to check in (its `checkin_jwt`), not yet
/// verified: the broker verifies it against the server it names.
pub struct CheckinToken(pub String);

impl FromRequestParts<AppState> for CheckinToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, "checkin_jwt")?;
        // Signature and expiry before anything reads the body: an unauthenticated caller
        // costs a header and an HMAC.
        state.broker.verify_checkin_token(token)?;
        Ok(CheckinToken(token.to_string()))
    }
}

fn bearer<'a>(parts: &'a Parts, what: &str) -> Result<&'a str, ApiError> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(format!("missing `Authorization: Bearer <{what}>`"))
    })?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not `Bearer <token>`"))
}

fn check_bearer(parts: &Parts, token: &Token, what: &str) -> Result<(), ApiError> {
    let offered = bearer(parts, what)?;
    if token.matches(offered) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(format!("wrong {what}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_environment_wins_then_the_file_then_a_new_token() {
        let dir = std::env::temp_dir().join(format!("zonebroker-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();

        let (token, source) =
            Token::load_or_generate(Some("from-env".into()), &dir, ADMIN_TOKEN_FILE).unwrap();
        assert!(token.matches("from-env"));
        assert_eq!(source, TokenSource::Environment);
        assert!(!dir.join(ADMIN_TOKEN_FILE).exists());

        let (generated, source) = Token::load_or_generate(None, &dir, ADMIN_TOKEN_FILE).unwrap();
        assert!(matches!(source, TokenSource::Generated(_)));
        let path = dir.join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let value = std::fs::read_to_string(&path).unwrap();
        assert_eq!(value.len(), 64);
        assert!(generated.matches(&value));

        let (again, source) = Token::load_or_generate(None, &dir, ADMIN_TOKEN_FILE).unwrap();
        assert!(matches!(source, TokenSource::File(_)));
        assert!(again.matches(&value));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token::new("secret-token");
        assert!(token.matches("secret-token"));
        assert!(!token.matches("secret-tokem"));
        assert!(!token.matches("secret-token2"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
