//! Who may talk to the dashboard's local server. It listens on loopback and holds the user's
//! certificate, so any page the browser opens could try to use it: a site whose DNS name is
//! rebound to 127.0.0.1, or a form on another origin posting to it.
//!
//! Decisions:
//! - A request is served only when its `Host` is the address the server listens on (or
//!   `localhost` with that port when listening on loopback): a rebound name fails.
//! - A state-changing request (anything but GET and HEAD) also needs an `Origin` equal to the
//!   listen origin and the per-process CSRF token in `X-Convoy-CSRF`, compared in constant time;
//!   a missing Origin is refused too (browsers send it on every cross-origin and same-origin
//!   POST with a body).
//! - The token is random per process, handed out only by `GET /api/me`, which a cross-origin
//!   page cannot read.

use std::net::SocketAddr;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-convoy-csrf";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host '{0}' is not this dashboard's address: open it at the address `convoy ui` printed (a foreign Host is how DNS rebinding reaches a local server)"
    )]
    ForeignHost(String),
    #[error("cross-origin request refused: Origin '{0}' is not this dashboard")]
    ForeignOrigin(String),
    #[error("a state-changing request needs the Origin header of this dashboard")]
    NoOrigin,
    #[error("missing or wrong CSRF token: reload the page and try again")]
    Csrf,
}

/// The listen address and the token, fixed when the server starts.
#[derive(Debug, Clone)]
pub struct Guard {
    listen: SocketAddr,
    token: String,
}

impl Guard {
    /// A guard for a server on `listen` with a fresh random token.
    pub fn new(listen: SocketAddr) -> Guard {
        let bytes: [u8; 32] = rand::random();
        Guard { listen, token: hex::encode(bytes) }
    }

    /// The CSRF token pages send back.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The origin pages are served from, e.g. `http://127.0.0.1:8080`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The `Host` values accepted.
    fn hosts(&self) -> Vec<String> {
        let mut hosts = vec![self.listen.to_string()];
        if self.listen.ip().is_loopback() {
            hosts.push(format!("localhost:{}", self.listen.port()));
        }
        hosts
    }

    /// Decides one request from its method and headers.
    pub fn check(
        &self,
        method: &http::Method,
        host: Option<&str>,
        origin: Option<&str>,
        csrf: Option<&str>,
    ) -> Result<(), Refusal> {
        let host = host.unwrap_or("");
        if !self.hosts().iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::ForeignHost(host.into()));
        }
        if matches!(*method, http::Method::GET | http::Method::HEAD) {
            return Ok(());
        }
        let origin = origin.ok_or(Refusal::NoOrigin)?;
        let allowed = self.hosts().iter().any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
        if !allowed {
            return Err(Refusal::ForeignOrigin(origin.into()));
        }
        match csrf {
            Some(given) if constant_time_eq(given.as_bytes(), self.token.as_bytes()) => Ok(()),
            _ => Err(Refusal::Csrf),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn guard() -> Guard {
        Guard::new("127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn reads_need_only_the_listen_host() {
        let g = guard();
        assert_eq!(g.check(&Method::GET, Some("127.0.0.1:8080"), None, None), Ok(()));
        assert_eq!(g.check(&Method::GET, Some("localhost:8080"), None, None), Ok(()));
        assert_eq!(
            g.check(&Method::GET, Some("evil.example:8080"), None, None),
            Err(Refusal::ForeignHost("evil.example:8080".into()))
        );
        assert!(g.check(&Method::GET, Some("127.0.0.1:8081"), None, None).is_err());
        assert!(g.check(&Method::GET, None, None, None).is_err());
    }

    #[test]
    fn writes_need_the_origin_and_the_token() {
        let g = guard();
        let host = Some("127.0.0.1:8080");
        let token = g.token().to_string();
        assert_eq!(g.check(&Method::POST, host, Some("http://127.0.0.1:8080"), Some(&token)), Ok(()));
        assert_eq!(g.check(&Method::POST, host, Some("http://localhost:8080"), Some(&token)), Ok(()));
        assert_eq!(g.check(&Method::POST, host, None, Some(&token)), Err(Refusal::NoOrigin));
        assert_eq!(
            g.check(&Method::POST, host, Some("http://evil.example"), Some(&token)),
            Err(Refusal::ForeignOrigin("http://evil.example".into()))
        );
        assert_eq!(g.check(&Method::POST, host, Some("http://127.0.0.1:8080"), None), Err(Refusal::Csrf));
        assert_eq!(g.check(&Method::POST, host, Some("http://127.0.0.1:8080"), Some("guess")), Err(Refusal::Csrf));
    }

    #[test]
    fn localhost_is_accepted_only_on_loopback() {
        let g = Guard::new("192.0.2.7:8080".parse().unwrap());
        assert!(g.check(&Method::GET, Some("localhost:8080"), None, None).is_err());
        assert!(g.check(&Method::GET, Some("192.0.2.7:8080"), None, None).is_ok());
        assert_ne!(Guard::new("127.0.0.1:1".parse().unwrap()).token(), g.token(), "a fresh token per server");
    }
}
