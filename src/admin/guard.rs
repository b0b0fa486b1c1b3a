//! Who may use the admin endpoint (DESIGN §1 Security): pure decisions on a request's line and
//! headers, so every rule is unit-tested without a socket.
//!
//! - `admin.token` set: every request needs `Authorization: Bearer TOKEN`, and that is all (the
//!   token is the authority: a remote operator may call the host by any name).
//! - No token (config validation allows that only on `127.0.0.1` or `::1`):
//!   - every request, reads included, must name the admin address in `Host` (and in the URI, if
//!     it is absolute): `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT` or the bind `IP:PORT`,
//!     case-insensitive, PORT being the port really listened on (without `:PORT` only when it is
//!     80). A DNS-rebinding page sends its own host name there.
//!   - a state-changing request (any method but GET, HEAD, OPTIONS, TRACE) must also declare a
//!     JSON body (`Content-Type: application/json`, which a page can only send cross-site after a
//!     CORS preflight we never answer), whose body must then parse as JSON, and carry no
//!     `Origin` or one naming the admin address (`http://` + an accepted Host).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName, Method, Uri, header};

/// Why a request (or connection) was refused; also the log classes of the refusal log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refusal {
    /// `admin.token` is set and the request does not carry it.
    Token,
    /// No token and the endpoint is not on loopback (config validation prevents this).
    NotLoopback,
    /// `Host` (or the URI's authority) does not name the admin address.
    ForeignHost,
    /// A state-changing request from another origin.
    ForeignOrigin,
    /// A state-changing request without `Content-Type: application/json`.
    NotJson,
    /// A state-changing request whose body does not parse as JSON.
    BadJson,
    /// The body did not arrive in time.
    SlowBody,
    /// The body is larger than the endpoint accepts (or broken).
    BadBody,
    /// The whole request took too long.
    Timeout,
    /// Too many admin connections at once: the new one was closed.
    TooManyConnections,
}

impl Refusal {
    /// The HTTP status answered.
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::Token => 401,
            Refusal::SlowBody => 408,
            Refusal::BadBody => 413,
            Refusal::Timeout | Refusal::TooManyConnections => 503,
            _ => 403,
        }
    }

    /// The short text of the JSON error (and of the log line).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Token => "missing or wrong bearer token",
            Refusal::NotLoopback => "the admin endpoint is not on loopback and has no admin.token",
            Refusal::ForeignHost => {
                "Host does not name the admin address (127.0.0.1:PORT, localhost:PORT, [::1]:PORT)"
            }
            Refusal::ForeignOrigin => "cross-origin request refused",
            Refusal::NotJson => {
                "a state-changing request needs Content-Type: application/json (or the bearer token)"
            }
            Refusal::BadJson => "the request body is not JSON",
            Refusal::SlowBody => "the request body did not arrive in time",
            Refusal::BadBody => "the request body is too large or broken",
            Refusal::Timeout => "the request timed out",
            Refusal::TooManyConnections => "too many admin connections",
        }
    }
}

/// The rules of one endpoint: its token and the address it really listens on.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    token: Option<std::sync::Arc<str>>,
    local: SocketAddr,
}

impl Policy {
    pub(crate) fn new(token: Option<String>, local: SocketAddr) -> Policy {
        Policy {
            token: token.map(Into::into),
            local,
        }
    }

    /// Checks a request's line and headers: `Ok(true)` when its body must also parse as JSON.
    pub(crate) fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<bool, Refusal> {
        if let Some(token) = &self.token {
            return if authorized(token, headers) {
                Ok(false)
            } else {
                Err(Refusal::Token)
            };
        }
        if !self.local.ip().is_loopback() {
            return Err(Refusal::NotLoopback);
        }
        let host = single(headers, &header::HOST).map_err(|()| Refusal::ForeignHost)?;
        if !host.is_some_and(|h| self.names_us(h)) {
            return Err(Refusal::ForeignHost);
        }
        if uri.authority().is_some_and(|a| !self.names_us(a.as_str())) {
            return Err(Refusal::ForeignHost);
        }
        // GET, HEAD, OPTIONS and TRACE change nothing; every other method may.
        if method.is_safe() {
            return Ok(false);
        }
        let origin = single(headers, &header::ORIGIN).map_err(|()| Refusal::ForeignOrigin)?;
        if let Some(origin) = origin {
            let ours = origin
                .to_ascii_lowercase()
                .strip_prefix("http://")
                .is_some_and(|authority| self.names_us(authority));
            if !ours {
                return Err(Refusal::ForeignOrigin);
            }
        }
        let content_type = single(headers, &header::CONTENT_TYPE).map_err(|()| Refusal::NotJson)?;
        let json = content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        });
        if json {
            Ok(true)
        } else {
            Err(Refusal::NotJson)
        }
    }

    /// Whether `authority` (`host[:port]`) names this endpoint from the host itself.
    fn names_us(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let port = self.local.port();
        let bind = match self.local.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        ["127.0.0.1", "localhost", "[::1]", bind.as_str()]
            .iter()
            .any(|host| {
                authority.strip_prefix(host).is_some_and(|rest| {
                    rest == format!(":{port}") || (rest.is_empty() && port == 80)
                })
            })
    }
}

/// The one value of header `name` (`None` when absent); `Err` when it is repeated or not text.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| ()),
        (Some(_), Some(_)) => Err(()),
    }
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| same_secret(given.trim().as_bytes(), token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn open(bind: &str) -> Policy {
        Policy::new(None, bind.parse().unwrap())
    }

    fn check(p: &Policy, method: Method, pairs: &[(&'static str, &str)]) -> Result<bool, Refusal> {
        p.check(
            &method,
            &Uri::from_static("/api/v1/cluster/leave"),
            &headers(pairs),
        )
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn token_requires_matching_bearer_header_and_nothing_else() {
        let p = Policy::new(Some("s3cret".into()), "0.0.0.0:18083".parse().unwrap());
        let auth = ("authorization", "Bearer s3cret");
        assert_eq!(check(&p, Method::GET, &[auth]), Ok(false));
        // The token is the authority: any Host, Origin or body type goes with it.
        let remote = [
            auth,
            ("host", "broker.example:18083"),
            ("origin", "http://x"),
        ];
        assert_eq!(check(&p, Method::POST, &remote), Ok(false));
        for bad in ["Bearer s3cre", "Basic s3cret", "Bearer s3cret2"] {
            let h = [("authorization", bad), ("host", "127.0.0.1:18083"), JSON];
            assert_eq!(check(&p, Method::POST, &h), Err(Refusal::Token), "{bad}");
        }
        assert_eq!(check(&p, Method::GET, &[]), Err(Refusal::Token));
    }

    #[test]
    fn without_token_host_must_name_the_loopback_address() {
        let p = open("127.0.0.1:18083");
        for host in [
            "127.0.0.1:18083",
            "localhost:18083",
            "LocalHost:18083",
            "[::1]:18083",
        ] {
            assert_eq!(
                check(&p, Method::GET, &[("host", host)]),
                Ok(false),
                "{host}"
            );
        }
        for host in [
            "evil.example:18083",
            "127.0.0.1:18084",
            "127.0.0.1",
            "localhost",
            "127.0.0.1:180834",
            "localhost.evil.example:18083",
            "127.0.0.2:18083",
        ] {
            let got = check(&p, Method::GET, &[("host", host)]);
            assert_eq!(got, Err(Refusal::ForeignHost), "{host}");
        }
        assert_eq!(check(&p, Method::GET, &[]), Err(Refusal::ForeignHost));
        let twice = [("host", "127.0.0.1:18083"), ("host", "evil:18083")];
        assert_eq!(check(&p, Method::GET, &twice), Err(Refusal::ForeignHost));
        // An absolute URI must name us too.
        let uri = Uri::from_static("http://evil.example:18083/metrics");
        let h = headers(&[("host", "127.0.0.1:18083")]);
        assert_eq!(p.check(&Method::GET, &uri, &h), Err(Refusal::ForeignHost));
        // On port 80 a browser leaves the port out.
        let p80 = open("[::1]:80");
        assert_eq!(
            check(&p80, Method::GET, &[("host", "localhost")]),
            Ok(false)
        );
        assert_eq!(check(&p80, Method::GET, &[("host", "[::1]:80")]), Ok(false));
    }

    #[test]
    fn without_token_state_changes_need_json_and_no_foreign_origin() {
        let p = open("127.0.0.1:18083");
        let host = ("host", "127.0.0.1:18083");
        assert_eq!(check(&p, Method::POST, &[host, JSON]), Ok(true));
        let with_charset = ("content-type", "Application/JSON; charset=utf-8");
        assert_eq!(check(&p, Method::POST, &[host, with_charset]), Ok(true));
        let own = ("origin", "http://localhost:18083");
        assert_eq!(check(&p, Method::POST, &[host, JSON, own]), Ok(true));
        for origin in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:18083",
            "http://127.0.0.1:18084",
        ] {
            let got = check(&p, Method::POST, &[host, JSON, ("origin", origin)]);
            assert_eq!(got, Err(Refusal::ForeignOrigin), "{origin}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let got = check(&p, Method::POST, &[host, ("content-type", ct)]);
            assert_eq!(got, Err(Refusal::NotJson), "{ct}");
        }
        assert_eq!(check(&p, Method::POST, &[host]), Err(Refusal::NotJson));
        for method in [Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(check(&p, method, &[host]), Err(Refusal::NotJson));
        }
        // Reads need no body and ignore Origin (a page cannot read the answer).
        let evil = ("origin", "http://evil.example");
        assert_eq!(check(&p, Method::GET, &[host, evil]), Ok(false));
    }

    #[test]
    fn without_token_a_non_loopback_endpoint_refuses_everything() {
        let p = open("10.0.0.1:18083");
        let h = [("host", "10.0.0.1:18083"), JSON];
        assert_eq!(check(&p, Method::GET, &h), Err(Refusal::NotLoopback));
    }
}
