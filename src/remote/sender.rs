//! One POST of a remote write request (on a kept-alive connection), and what its answer means
//! for the queue.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::proto::HEADERS;
use crate::config::remote_write::{Auth, RemoteWriteConfig};

/// What the receiver made of a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Stored (2xx).
    Stored,
    /// Try again later: the receiver is away, overloaded (429), failed (5xx), or turns the
    /// daemon away (3xx, 401, 403, 404, 405, 407: credentials or a path to set right).
    Retry(String),
    /// Some series refused for good (4xx): the receiver's words. Splitting the request
    /// finds them.
    Rejected(String),
    /// The samples are older than the receiver takes: the receiver's words. The time is
    /// the same for every series of a request, so splitting would not help. `retry`: a 5xx
    /// (Prometheus answers 500 past its out-of-order window), tried again a bounded number
    /// of times before it counts as refused; a 4xx is refused at once.
    TooOld { why: String, retry: bool },
}

/// Where a queue's requests go: the receiver over HTTP ([`Sender`]), or a test's stand-in.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Deliver `body` (a Snappy-compressed `WriteRequest`); what the receiver made of it.
    fn send(&self, body: Bytes) -> impl std::future::Future<Output = Answer> + Send;
}

impl Transport for Sender {
    async fn send(&self, body: Bytes) -> Answer {
        Sender::send(self, body).await
    }
}

/// Where and how requests go: the connection's parts, built once.
pub(crate) struct Sender {
    config: RemoteWriteConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The connection of the last request, kept for the next.
    connection: tokio::sync::Mutex<Option<Connection>>,
}

/// What a body says when the samples are older than the receiver takes (Prometheus: "too old
/// sample" with a 500 past its out-of-order window, "out of bounds" with a 400 without one).
fn too_old(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    ["too old", "out of bounds", "outside the time window"]
        .iter()
        .any(|s| body.contains(s))
}

impl Sender {
    /// A sender for `config`; a TLS configuration that cannot be built is the error.
    pub(crate) fn new(config: &RemoteWriteConfig) -> Result<Sender, String> {
        let tls = match config.url.scheme_str() {
            Some("https") => {
                let client = crate::files::tls_client(
                    config.ca_file.as_deref(),
                    config
                        .client_cert
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path())),
                )?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
            }
            _ => None,
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        let mut add = |name: &str, value: &str| -> Result<(), String> {
            headers.push((
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?,
            ));
            Ok(())
        };
        for (name, value) in HEADERS {
            add(name, value)?;
        }
        add("User-Agent", &format!("power-monitord/{}", crate::VERSION))?;
        match &config.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.0));
                add("Authorization", &format!("Basic {token}"))?;
            }
            Auth::Bearer(token) => add("Authorization", &format!("Bearer {}", token.0))?,
        }
        for (name, value) in &config.headers {
            add(name, value)?;
        }
        Ok(Sender {
            config: config.clone(),
            tls,
            headers,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// POST `body` (a Snappy-compressed `WriteRequest`) within the configured timeout.
    pub(crate) async fn send(&self, body: Bytes) -> Answer {
        match tokio::time::timeout(self.config.timeout, self.post(body)).await {
            Ok(Ok((status, text))) => classify(status, &text),
            Ok(Err(e)) => Answer::Retry(e),
            Err(_) => Answer::Retry(format!(
                "no answer within {}",
                humantime::format_duration(self.config.timeout)
            )),
        }
    }

    /// POST `body` on the connection kept from the last request, or a new one. A kept one
    /// that the receiver closed meanwhile (an idle timeout) is replaced at once, not retried
    /// after a backoff.
    async fn post(&self, body: Bytes) -> Result<(u16, String), String> {
        let mut kept = self.connection.lock().await;
        if let Some(mut connection) = kept.take() {
            if !connection.send.is_closed() && connection.send.ready().await.is_ok() {
                if let Ok((status, text, reusable)) =
                    connection.exchange(self.request(body.clone())?).await
                {
                    if reusable {
                        *kept = Some(connection);
                    }
                    return Ok((status, text));
                }
            }
        }
        let mut connection = self.connect().await?;
        let (status, text, reusable) = connection.exchange(self.request(body)?).await?;
        if reusable {
            *kept = Some(connection);
        }
        Ok((status, text))
    }

    /// The request for `body`, with the configured headers.
    fn request(&self, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
        let uri = &self.config.url;
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let mut request = Request::post(uri.clone())
            .header(
                hyper::header::HOST,
                uri.authority().map_or(host, |a| a.as_str()),
            )
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(request)
    }

    /// A new HTTP/1.1 connection to the receiver (TCP, then TLS for https).
    async fn connect(&self) -> Result<Connection, String> {
        let uri = &self.config.url;
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Connection::handshake(TokioIo::new(tcp)).await,
            Some(connector) => {
                let name = self
                    .config
                    .server_name
                    .as_deref()
                    .unwrap_or(host)
                    .to_string();
                let server = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = connector
                    .connect(server, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}: {e}"))?;
                Connection::handshake(TokioIo::new(tls)).await
            }
        }
    }
}

/// An HTTP/1.1 connection kept between requests: one TCP and TLS handshake for many
/// requests, as a Pi on a metered link wants (a TLS handshake is kilobytes).
struct Connection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The task that drives the connection; aborted with it.
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    async fn handshake<T>(io: TokioIo<T>) -> Result<Connection, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { send, driver })
    }

    /// One request: the status, (the start of) the body, and whether the connection can
    /// carry the next (its body read whole, the receiver not closing it).
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, String, bool), String> {
        let response = self
            .send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let closing = response
            .headers()
            .get(hyper::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // The start of what it says is enough; a body past 64 KiB is not read.
        let limited = http_body_util::Limited::new(response.into_body(), 64 << 10);
        let body = tokio::time::timeout(Duration::from_secs(10), limited.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes());
        let reusable = body.is_some() && !closing;
        let body = body.unwrap_or_default();
        let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
        Ok((status, text, reusable))
    }
}

/// The answer a status and body mean.
fn classify(status: u16, body: &str) -> Answer {
    let said = || format!("{status}: {}", body.trim());
    match status {
        200..=299 => Answer::Stored,
        429 => Answer::Retry(said()),
        // The receiver turns the daemon away, not the samples (credentials, a wrong path, a
        // redirect, a proxy): they are kept until it is set right.
        300..=399 | 401 | 403 | 404 | 405 | 407 => Answer::Retry(said()),
        _ if too_old(body) => Answer::TooOld {
            why: said(),
            retry: status >= 500,
        },
        500..=599 => Answer::Retry(said()),
        _ => Answer::Rejected(said()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_mean_what_remote_write_says() {
        assert_eq!(classify(204, ""), Answer::Stored);
        assert!(matches!(classify(429, "slow down"), Answer::Retry(_)));
        assert!(matches!(classify(503, "unavailable"), Answer::Retry(_)));
        assert!(matches!(
            classify(400, "out of order sample"),
            Answer::Rejected(_)
        ));
        // A password changed, a path or a proxy wrong: the spool is kept, not thrown away.
        for status in [301, 401, 403, 404, 405, 407] {
            assert!(matches!(classify(status, ""), Answer::Retry(_)), "{status}");
        }
        // Prometheus 2.42 answers 500 for samples past its window: never retried forever.
        assert!(matches!(
            classify(500, "too old sample"),
            Answer::TooOld { retry: true, .. }
        ));
        // ... and 400 for samples before its head without a window: never retried.
        assert!(matches!(
            classify(400, "out of bounds"),
            Answer::TooOld { retry: false, .. }
        ));
    }
}
