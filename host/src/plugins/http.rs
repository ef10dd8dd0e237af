//! Outgoing HTTP for provider plugins: only to the endpoints their validated settings name,
//! with capped timeouts and a capped response size.

use std::time::Duration;

use http_body_util::BodyExt as _;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

/// The longest a provider may wait to connect, for the first byte, or between bytes.
const MAX_CONNECT: Duration = Duration::from_secs(10);
const MAX_FIRST_BYTE: Duration = Duration::from_secs(30);
const MAX_BETWEEN_BYTES: Duration = Duration::from_secs(30);
/// The largest response body a provider may receive.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// The HTTP context of one provider call.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: EndpointHooks,
}

impl HttpState {
    pub fn new(endpoints: &[String]) -> Self {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: EndpointHooks {
                allowed: endpoints.iter().filter_map(|e| origin(e)).collect(),
            },
        }
    }

    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table,
            ctx: &mut self.ctx,
        }
    }
}

/// Refuses requests to any origin but the allowed ones.
struct EndpointHooks {
    allowed: Vec<String>,
}

/// `scheme://host:port` of a URL or origin, with the scheme's default port made explicit;
/// `None` if it has no scheme or host.
pub fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    origin_of(&uri)
}

fn origin_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })?;
    Some(format!("{scheme}://{host}:{port}"))
}

fn capped(value: Option<Duration>, max: Duration) -> Option<Duration> {
    Some(value.map_or(max, |v| v.min(max)))
}

type Answer = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for EndpointHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = Answer> + Send> {
        let target = origin_of(request.uri());
        if !target.as_ref().is_some_and(|t| self.allowed.contains(t)) {
            tracing::warn!(
                target = target.as_deref().unwrap_or("?"),
                allowed = ?self.allowed,
                "provider plugin tried to reach an endpoint its settings do not name"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let options = options.unwrap_or(RequestOptions {
            connect_timeout: None,
            first_byte_timeout: None,
            between_bytes_timeout: None,
        });
        let options = RequestOptions {
            connect_timeout: capped(options.connect_timeout, MAX_CONNECT),
            first_byte_timeout: capped(options.first_byte_timeout, MAX_FIRST_BYTE),
            between_bytes_timeout: capped(options.between_bytes_timeout, MAX_BETWEEN_BYTES),
        };
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| {
                http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                    .map_err(|_| HttpError::HttpResponseBodySize(Some(MAX_RESPONSE_BYTES as u64)))
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin("https://EC2.us-east-1.amazonaws.com").as_deref(),
            Some("https://ec2.us-east-1.amazonaws.com:443")
        );
        assert_eq!(
            origin("http://127.0.0.1:5000/").as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(
            origin("http://localhost/x?y").as_deref(),
            Some("http://localhost:80")
        );
        assert_eq!(origin("ec2.amazonaws.com"), None);
        assert_eq!(origin("ftp://x"), None);
    }
}
