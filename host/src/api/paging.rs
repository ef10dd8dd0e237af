//! `?limit=&after=` on a list: a page in a stable order, and where the next one starts.
//!
//! Without `limit` a list answers every item, as it always has. With it, at most `limit`
//! items, and, when more remain, a `Link: <...?limit=N&after=CURSOR>; rel="next"` header
//! (RFC 8288) whose `after` is an opaque cursor: the place of the page's last item, which
//! stays valid when that item is deleted. The body is the same JSON array either way.

use std::str::FromStr;

use axum::Json;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::error::ApiError;
use crate::domain::page::MAX_PAGE;

/// The query parameters of a paged list, as read.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<u64>,
    after: Option<String>,
}

/// The query parameters of `GET /agents`, as documented.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AgentPageParams {
    /// At most this many agents, from 1 to 1000. Without it, every agent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Start after this cursor (an agent id): the `after` of the previous page's `Link`.
    #[param(value_type = Option<uuid::Uuid>)]
    after: Option<String>,
}

/// The query parameters of `GET /sessions`, as documented.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SessionPageParams {
    /// At most this many sessions, from 1 to 1000. Without it, every session.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Start after this cursor (`<created_at_ms>-<session id>`): the `after` of the previous
    /// page's `Link`.
    #[param(
        pattern = r"^[0-9]{1,19}-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    after: Option<String>,
}

/// A page request: where to start (a cursor of type `C`) and how many.
pub struct Paging<C> {
    pub after: Option<C>,
    pub limit: Option<usize>,
}

impl<S: Send + Sync, C: FromStr> FromRequestParts<S> for Paging<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<PageQuery>::try_from_uri(&parts.uri).map_err(|rejection| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_query",
                rejection.body_text(),
            )
        })?;
        let limit = match params.limit {
            None => None,
            Some(limit) if (1..=MAX_PAGE as u64).contains(&limit) => Some(limit as usize),
            Some(_) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_query",
                    format!("`limit` is from 1 to {MAX_PAGE}"),
                )
                .field("limit"));
            }
        };
        let after = params
            .after
            .map(|raw| {
                raw.parse::<C>().map_err(|_| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_query",
                        "`after` is the cursor of a previous page's `Link` header",
                    )
                    .field("after")
                })
            })
            .transpose()?;
        Ok(Paging { after, limit })
    }
}

/// Answer `items`, with the `Link` to the next page of `path` when `next` says more remain.
pub fn answer<T: Serialize, C: std::fmt::Display>(
    path: &str,
    limit: Option<usize>,
    items: Vec<T>,
    next: Option<C>,
) -> Response {
    let mut response = Json(items).into_response();
    if let (Some(limit), Some(next)) = (limit, next) {
        let link = format!("</api/v1{path}?limit={limit}&after={next}>; rel=\"next\"");
        let value = HeaderValue::from_str(&link).expect("a path and a cursor are a header value");
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// The next page's `path?query` in a `Link` header value, if it names one.
pub fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|entry| {
        let (target, params) = entry.trim().split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| target.trim().strip_prefix('<')?.strip_suffix('>'))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        assert_eq!(
            next_link(r#"</api/v1/agents?limit=2&after=x>; rel="next""#),
            Some("/api/v1/agents?limit=2&after=x")
        );
        assert_eq!(
            next_link(r#"</a>; rel="prev", </b?after=1>; rel="next""#),
            Some("/b?after=1")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
        assert_eq!(next_link(""), None);
    }
}
