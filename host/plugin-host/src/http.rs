//! Outgoing HTTP for provider plugins: only to the endpoints their validated settings name,
//! only to addresses their config allows (never link-local: cloud metadata), with capped
//! timeouts and a capped response size. The host name is resolved and each address checked
//! here, and the connection goes to a checked address (DNS cannot rebind in between).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::BodyExt as _;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};
use zonebroker_core::domain::endpoint::{EndpointRefusal, check_address};

/// The longest a provider may wait to connect, for the first byte, or between bytes.
const MAX_CONNECT: Duration = Duration::from_secs(10);
const MAX_FIRST_BYTE: Duration = Duration::from_secs(30);
const MAX_BETWEEN_BYTES: Duration = Duration::from_secs(30);
/// The largest response body a provider may receive.
pub const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// Where a provider call may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The origins its validated settings named.
    pub origins: Vec<String>,
    /// Whether loopback and private addresses are allowed (the provider config's
    /// `allow_private_endpoints`). Link-local addresses never are.
    pub allow_private: bool,
}

impl Endpoints {
    /// Nowhere: calls that need no network (`describe`, `validate`).
    pub fn none() -> Self {
        Endpoints::default()
    }
}

/// Why a provider may not connect to an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("`{0}` is not a URL with a scheme and a host")]
    Invalid(String),
    #[error("`{host}` resolves to {refusal}")]
    Refused {
        host: String,
        refusal: EndpointRefusal,
    },
    #[error("cannot resolve `{host}`: {message}")]
    Unresolvable { host: String, message: String },
}

/// Resolve `host` (a name or an IP literal, IPv6 in brackets or not) and check every address
/// it resolves to: the addresses to connect to, or why none may be.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, EndpointError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let unresolvable = |message: String| EndpointError::Unresolvable {
                host: host.to_string(),
                message,
            };
            tokio::time::timeout(MAX_CONNECT, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| unresolvable("timed out".into()))?
                .map_err(|e| unresolvable(e.to_string()))?
                .collect()
        }
    };
    if addresses.is_empty() {
        return Err(EndpointError::Unresolvable {
            host: host.to_string(),
            message: "no address".into(),
        });
    }
    for address in &addresses {
        check_address(address.ip(), allow_private).map_err(|refusal| EndpointError::Refused {
            host: host.to_string(),
            refusal,
        })?;
    }
    Ok(addresses)
}

/// [`resolve_checked`] for a URL or an origin.
pub async fn check_endpoint(url: &str, allow_private: bool) -> Result<(), EndpointError> {
    let (host, port) = host_and_port(url).ok_or_else(|| EndpointError::Invalid(url.into()))?;
    resolve_checked(&host, port, allow_private).await.map(drop)
}

/// The host (lower case) and port (the scheme's default if none) of a URL.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    host_and_port_of(&uri)
}

fn host_and_port_of(uri: &http::Uri) -> Option<(String, u16)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    })?;
    Some((host, port))
}

/// The HTTP context of one provider call.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: EndpointHooks,
}

impl HttpState {
    pub fn new(endpoints: &Endpoints) -> Self {
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: EndpointHooks {
                allowed: endpoints.origins.iter().filter_map(|e| origin(e)).collect(),
                allow_private: endpoints.allow_private,
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

/// Refuses requests to any origin but the allowed ones, and to addresses not allowed.
struct EndpointHooks {
    allowed: Vec<String>,
    allow_private: bool,
}

/// `scheme://host:port` of a URL or origin, with the scheme's default port made explicit;
/// `None` if it has no scheme or host.
pub fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    origin_of(&uri)
}

fn origin_of(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let (host, port) = host_and_port_of(uri)?;
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
        let allow_private = self.allow_private;
        Box::new(async move {
            let (host, port) =
                host_and_port_of(request.uri()).ok_or(HttpError::HttpRequestUriInvalid)?;
            let addresses = match resolve_checked(&host, port, allow_private).await {
                Ok(addresses) => addresses,
                Err(error) => {
                    tracing::warn!("provider plugin request refused: {error}");
                    return Err(match error {
                        EndpointError::Unresolvable { .. } => HttpError::DnsError {
                            rcode: None,
                            info_code: None,
                        },
                        _ => HttpError::HttpRequestDenied,
                    });
                }
            };
            let (response, io) = send_to_checked(request, options, &host, &addresses).await?;
            let response = response.map(|body| {
                http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
                    .map_err(|_| HttpError::HttpResponseBodySize(Some(MAX_RESPONSE_BYTES as u64)))
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + Unpin + 'static
{
}

/// Send `request` over a connection to one of `addresses` (already checked), with TLS for
/// `host` when the scheme is https. Adapted from wasmtime-wasi-http's
/// `default_send_request` (Apache-2.0 WITH LLVM-exception), which resolves the host itself.
async fn send_to_checked(
    mut request: http::Request<WasiBody>,
    options: RequestOptions,
    host: &str,
    addresses: &[SocketAddr],
) -> Result<
    (
        http::Response<ResponseBody>,
        impl Future<Output = Result<(), HttpError>> + Send + use<>,
    ),
    HttpError,
> {
    use std::pin::{Pin, pin};
    use std::task::Poll;
    let connect_timeout = options.connect_timeout.unwrap_or(MAX_CONNECT);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(MAX_FIRST_BYTE);
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(MAX_BETWEEN_BYTES)
        .max(Duration::from_nanos(1));
    let use_tls = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);

    let connect = async {
        let mut last_error = None;
        for address in addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(HttpError::Connect(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })))
    };
    let stream = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if use_tls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = match bare.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(bare.to_string())?,
        };
        let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, stream))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new()
            .handshake(wasmtime_wasi_http::io::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request line carries the path only (no proxy here).
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;

    let send = async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)??;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, HttpError>(response.map(|incoming| ResponseBody { incoming, timeout }))
    };
    let mut send = pin!(send);
    let mut connection = Some(connection);
    // Wait for the response while driving the connection.
    let response = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(running) = connection.as_mut() else {
                return Poll::Pending;
            };
            let result = std::task::ready!(Pin::new(running).poll(cx));
            connection = None;
            match result {
                Ok(()) => send.as_mut().poll(cx),
                Err(error) => Poll::Ready(Err(HttpError::from(error))),
            }
        }
    })
    .await?;
    Ok((response, async move {
        let Some(connection) = connection.take() else {
            return Ok(());
        };
        connection.await.map_err(|error| {
            if error.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                error.into()
            }
        })
    }))
}

/// A response body that fails when no byte arrives for the between-bytes timeout.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
}

impl http_body::Body for ResponseBody {
    type Data = bytes::Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(if error.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(error)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                std::task::ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
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
