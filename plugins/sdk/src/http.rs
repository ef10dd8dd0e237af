//! A small, blocking HTTP client for provider plugins, over `wasi:http/outgoing-handler`.
//!
//! The broker lets a provider reach only the origins its validated settings name, with
//! capped timeouts and response sizes; anything else fails with [`HttpError`].
//!
//! ```ignore
//! use zonebroker_plugin_sdk::http::{Request, send};
//! let response = send(&Request::post("https://ec2.us-east-1.amazonaws.com/", body)
//!     .header("content-type", "application/x-www-form-urlencoded; charset=utf-8"))?;
//! ```

use std::time::Duration;

use crate::__bindings::provider::wasi::http::outgoing_handler;
use crate::__bindings::provider::wasi::http::types::{
    Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::__bindings::provider::wasi::io::streams::StreamError;

/// An outgoing request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `scheme://host[:port]/path?query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Connect and first-byte timeout (the broker caps it).
    pub timeout: Option<Duration>,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Self {
        Request {
            method: "GET".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request {
            method: "POST".into(),
            url: url.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A response, body read in full.
#[derive(Clone, Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A request that could not be made or answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError(pub String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// The parts of a URL a request needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    pub https: bool,
    /// `host` or `host:port`.
    pub authority: &'a str,
    /// `/path?query`, at least `/`.
    pub path_and_query: &'a str,
}

/// Split `scheme://authority/path?query` (only `http` and `https`).
pub fn parse_url(url: &str) -> Result<Url<'_>, HttpError> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(HttpError(format!("`{url}` is not an http(s) URL")));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(HttpError(format!("`{url}` has no host")));
    }
    Ok(Url {
        https,
        authority,
        path_and_query: if path.is_empty() { "/" } else { path },
    })
}

/// Send `request` and read the whole response.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let fail = |what: &str, e: &dyn std::fmt::Debug| HttpError(format!("{what}: {e:?}"));
    let url = parse_url(&request.url)?;

    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| fail(&format!("header `{name}`"), &e))?;
    }
    if !request.body.is_empty()
        && !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        // Without it the body would go out chunked, which some endpoints refuse.
        headers
            .append("content-length", request.body.len().to_string().as_bytes())
            .map_err(|e| fail("content-length", &e))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    outgoing
        .set_method(&method)
        .map_err(|e| fail("method", &e))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|e| fail("scheme", &e))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|e| fail("authority", &e))?;
    outgoing
        .set_path_with_query(Some(url.path_and_query))
        .map_err(|e| fail("path", &e))?;
    let body = outgoing.body().map_err(|e| fail("request body", &e))?;

    let options = RequestOptions::new();
    if let Some(timeout) = request.timeout {
        let nanos = timeout.as_nanos().min(u128::from(u64::MAX)) as u64;
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
    }
    let pending = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|e| HttpError(format!("{e:?}")))?;

    {
        let stream = body.write().map_err(|e| fail("request stream", &e))?;
        for chunk in request.body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| fail("writing the request body", &e))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| HttpError(format!("{e:?}")))?;

    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| HttpError("no response".into()))?
        .map_err(|()| HttpError("the response was already taken".into()))?
        .map_err(|e| HttpError(format!("{e:?}")))?;

    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|e| fail("response body", &e))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|e| fail("response stream", &e))?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError(format!(
                        "reading the response: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_request_parts() {
        let url = parse_url("https://ec2.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            url,
            Url {
                https: true,
                authority: "ec2.us-east-1.amazonaws.com",
                path_and_query: "/"
            }
        );
        let url = parse_url("http://127.0.0.1:5000/x/y?z=1").unwrap();
        assert_eq!(
            url,
            Url {
                https: false,
                authority: "127.0.0.1:5000",
                path_and_query: "/x/y?z=1"
            }
        );
        let url = parse_url("http://h?q").unwrap();
        assert_eq!(url.path_and_query, "?q");
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("https:///x").is_err());
    }
}
