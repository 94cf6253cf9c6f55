//! What each request gets: the rate limit, authentication, the route, the configured headers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::auth::Verdict;
use super::web_config::RateLimit;
use super::{api, page, App};
use crate::metrics::CONTENT_TYPE;

/// A response with a body and its content type.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

/// A token bucket per client address: `burst` requests at once, one more per `interval`.
///
/// Per client, not one for everyone (the exporter-toolkit's single bucket): one client's
/// flood then costs only that client its answers, never the scraper's. It applies before
/// authentication, so a flood of guesses is also held back before any bcrypt. An IPv6 client
/// is its /64 (what one host usually gets); past [`MAX_CLIENTS`] buckets, new clients share
/// one, and a known client keeps its own until it has not been seen for [`STALE`].
pub(crate) struct Limiter {
    limit: RateLimit,
    /// Per client: tokens, and when it was last seen.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// When clients not seen for [`STALE`] were last let go.
    swept: Mutex<Instant>,
}

/// Client buckets kept at most.
const MAX_CLIENTS: usize = 4096;
/// A client not seen for this long gives its bucket up when room is needed.
const STALE: Duration = Duration::from_secs(600);

/// The address that stands for `peer`'s client: an IPv4 address, or an IPv6 /64.
fn client(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl Limiter {
    /// Full buckets for everyone.
    pub(crate) fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// Take a token from `peer`'s bucket if there is one.
    pub(crate) fn allow(&self, peer: IpAddr) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let burst = f64::from(self.limit.burst);
        let refill = |tokens: f64, last: Instant| {
            (tokens + now.duration_since(last).as_secs_f64() / self.limit.interval.as_secs_f64())
                .min(burst)
        };
        let mut key = client(peer);
        if !buckets.contains_key(&key) && buckets.len() >= MAX_CLIENTS {
            // Known clients are never pushed out by newcomers (a flood of new addresses
            // would push the scraper out first); only those not seen for a while go, and
            // the newcomers beyond the limit share a bucket.
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(*swept) >= Duration::from_secs(1) {
                *swept = now;
                buckets.retain(|_, (_, last)| now.duration_since(*last) < STALE);
            }
            if buckets.len() >= MAX_CLIENTS {
                key = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
            }
        }
        let (tokens, last) = buckets.entry(key).or_insert((burst, now));
        *tokens = refill(*tokens, *last);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answer `peer`'s request: rate limit, authentication (except `/healthz` when it is public),
/// the route, then the headers the web configuration adds.
pub(crate) async fn handle<B>(
    app: &App,
    peer: IpAddr,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    let web = app.web();
    let public = web.public_healthz && request.uri().path() == "/healthz";
    let needs_auth = !(web.security.users.is_empty() || public);
    let verdict = if web.limiter.as_ref().is_some_and(|l| !l.allow(peer)) {
        None
    } else if needs_auth {
        Some(
            app.auth
                .check(
                    &web.security.users,
                    request.headers().get(header::AUTHORIZATION),
                )
                .await,
        )
    } else {
        Some(Verdict::Allowed)
    };
    let mut response = match verdict {
        None => text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n"),
        Some(Verdict::Allowed) => route(app, request),
        Some(Verdict::Refused) => {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"power-monitord\""),
            );
            r
        }
        Some(Verdict::Busy) => {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many password checks at once; try again\n",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for (name, value) in &web.security.headers {
        headers.insert(name.clone(), value.clone());
    }
    response
}

/// Only GET and HEAD exist; hyper leaves out the body for HEAD.
fn route<B>(app: &App, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => metrics(app, request.headers()),
        "/" => page_response("text/html; charset=utf-8", page::status_page(app)),
        "/static/style.css" => page_response("text/css; charset=utf-8", page::STYLE),
        "/static/app.js" => page_response("text/javascript; charset=utf-8", page::SCRIPT),
        "/static/icon.svg" => page_response("image/svg+xml", page::ICON),
        "/api/history" => history(app, request.uri().query()),
        "/healthz" => {
            if app.health.healthy() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "sampling has stalled\n")
            }
        }
        "/api/readings" => json(&api::readings(app, &app.sensors())),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// What a page and its files may do: only what they get from this origin; no framing, no
/// inline code, no plugins, no forms.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page or one of its files, with the policy it runs under.
fn page_response(content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = response(StatusCode::OK, content_type, body);
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => response(StatusCode::OK, "application/json", body),
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

/// `/api/history[?sensor=NAME][&since=UNIX]`.
fn history(app: &App, query: Option<&str>) -> Response<Full<Bytes>> {
    let mut sensor = None;
    let mut since = 0.0;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "sensor" => sensor = Some(value.into_owned()),
            "since" => match value.parse::<f64>() {
                Ok(t) if t.is_finite() => since = t,
                _ => return text(StatusCode::BAD_REQUEST, "since: expected a Unix time\n"),
            },
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "expected only the parameters sensor and since\n",
                )
            }
        }
    }
    let sensors = app.sensors();
    match api::history(&sensors, sensor.as_deref(), since) {
        Some(h) => json(&h),
        None => text(StatusCode::NOT_FOUND, "no such sensor\n"),
    }
}

fn metrics(app: &App, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let body = app.metrics.encode();
    if !accepts_gzip(headers) {
        return response(StatusCode::OK, CONTENT_TYPE, body);
    }
    match super::gzip::gzip(&body) {
        Some(gzipped) => {
            let mut r = response(StatusCode::OK, CONTENT_TYPE, gzipped);
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            r
        }
        None => response(StatusCode::OK, CONTENT_TYPE, body),
    }
}

/// `Accept-Encoding` names gzip (or `*`) with a quality above zero (RFC 9110 12.5.3: names
/// and parameters are case-insensitive, and whitespace may surround `;` and `=`).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let quality = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, q)| q.trim().parse::<f32>().ok());
            (coding.eq_ignore_ascii_case("gzip") || coding == "*")
                && quality.is_some_and(|q| q > 0.0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&headers("gzip")));
        assert!(accepts_gzip(&headers("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(&headers("*")));
        assert!(accepts_gzip(&headers("GZIP ; Q = 1")));
        assert!(!accepts_gzip(&headers("gzip;q=0")));
        assert!(!accepts_gzip(&headers("gzip;Q=0")));
        assert!(!accepts_gzip(&headers("gzip ; q = 0")));
        assert!(!accepts_gzip(&headers("gzip;q=0.000")));
        assert!(!accepts_gzip(&headers("gzip;q=nonsense")));
        assert!(!accepts_gzip(&headers("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn a_rate_limit_lets_a_burst_through_then_one_per_interval() {
        let limiter = Limiter::new(RateLimit {
            burst: 3,
            interval: std::time::Duration::from_millis(50),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| limiter.allow(a)));
        assert!(!limiter.allow(a));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(limiter.allow(a));
        assert!(!limiter.allow(a));
    }

    #[test]
    fn one_client_cannot_use_up_another_clients_requests() {
        let limiter = Limiter::new(RateLimit {
            burst: 2,
            interval: std::time::Duration::from_secs(3600),
        });
        let flooder: IpAddr = "2001:db8::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8::2".parse().unwrap();
        let scraper: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!((0..100).filter(|_| limiter.allow(flooder)).count(), 2);
        // The flooder's /64 is one client.
        assert!(!limiter.allow(same_host));
        // Another client has its own burst; an IPv4-mapped address is the IPv4 client.
        assert!(limiter.allow(scraper));
        assert!(limiter.allow("192.0.2.7".parse().unwrap()));
        assert!(!limiter.allow(scraper));
    }

    #[test]
    fn past_the_bucket_limit_new_clients_share_one() {
        let limiter = Limiter::new(RateLimit {
            burst: 1,
            interval: std::time::Duration::from_secs(3600),
        });
        for i in 0..MAX_CLIENTS as u32 {
            assert!(limiter.allow(IpAddr::V4(i.into())));
        }
        let late: IpAddr = "2001:db8:1::1".parse().unwrap();
        assert!(limiter.allow(late));
        assert!(!limiter.allow("2001:db8:2::1".parse().unwrap()));
        let buckets = limiter.buckets.lock().unwrap();
        assert_eq!(buckets.len(), MAX_CLIENTS + 1);
        // Every known client kept its own.
        assert!((0..MAX_CLIENTS as u32).all(|i| buckets.contains_key(&IpAddr::V4(i.into()))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any header value: an answer, never a panic.
        #[test]
        fn any_accept_encoding(value in "[ -~]{0,80}") {
            if let Ok(v) = HeaderValue::from_str(&value) {
                let mut h = HeaderMap::new();
                h.insert(header::ACCEPT_ENCODING, v);
                let _ = accepts_gzip(&h);
            }
        }

        /// Any method, path and query hyper accepts gets a status from the router.
        #[test]
        fn any_request_line(method in "[A-Z]{1,10}", path in "/[!-~]{0,60}") {
            let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), path.parse::<hyper::Uri>()) else {
                return Ok(());
            };
            let app = App::for_tests();
            let request = Request::builder().method(method.clone()).uri(uri).body(()).unwrap();
            let r = route(&app, &request);
            let expected: &[u16] = if method == Method::GET || method == Method::HEAD {
                &[200, 404, 503]
            } else {
                &[405]
            };
            prop_assert!(expected.contains(&r.status().as_u16()), "{} {}", method, path);
        }
    }
}
