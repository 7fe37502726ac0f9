//! Who may talk to the dashboard's server. `convoy ui` listens on loopback and holds the user's
//! certificate, and the hub's dashboard holds signed-in sessions, so any page the browser opens
//! could try to use them: a site whose DNS name is rebound to the server's address, or a form
//! on another origin posting to it.
//!
//! Decisions:
//! - A request is served only when its `Host` is the dashboard's own (the listen address, or
//!   `localhost` with that port when listening on loopback; the public URL's host for the
//!   hub): a rebound name fails.
//! - A state-changing request (anything but GET and HEAD) also needs an `Origin` equal to the
//!   dashboard's origin (a missing Origin is refused too: browsers send it on every
//!   cross-origin and same-origin POST with a body) and the session's CSRF token in
//!   `X-Convoy-CSRF`, compared in constant time.
//! - The token is handed out only by `GET /api/me`, which a cross-origin page cannot read.

use std::net::SocketAddr;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-convoy-csrf";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Host '{0}' is not this dashboard's address: open it at the address it was started with (a foreign Host is how DNS rebinding reaches a server)"
    )]
    ForeignHost(String),
    #[error("cross-origin request refused: Origin '{0}' is not this dashboard")]
    ForeignOrigin(String),
    #[error("a state-changing request needs the Origin header of this dashboard")]
    NoOrigin,
    #[error("missing or wrong CSRF token: reload the page and try again")]
    Csrf,
}

/// The dashboard's origin and the `Host` values it answers to, fixed when the server starts.
#[derive(Debug, Clone)]
pub struct Guard {
    origin: String,
    /// `(scheme, host:port)` pairs accepted.
    hosts: Vec<String>,
    scheme: &'static str,
}

impl Guard {
    /// A plain-HTTP server on `listen` (`convoy ui`).
    pub fn local(listen: SocketAddr) -> Guard {
        let mut hosts = vec![listen.to_string()];
        if listen.ip().is_loopback() {
            hosts.push(format!("localhost:{}", listen.port()));
        }
        Guard { origin: format!("http://{listen}"), hosts, scheme: "http" }
    }

    /// A server browsers reach at `url` (`https://host[:port]`, the hub's dashboard).
    pub fn public(url: &reqwest::Url) -> Guard {
        let scheme = if url.scheme() == "http" { "http" } else { "https" };
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Guard { origin: format!("{scheme}://{authority}"), hosts: vec![authority], scheme }
    }

    /// The origin pages are served from, e.g. `http://127.0.0.1:8080`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Refuses a `Host` that is not the dashboard's.
    pub fn host(&self, host: Option<&str>) -> Result<(), Refusal> {
        let host = host.unwrap_or("");
        match self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            true => Ok(()),
            false => Err(Refusal::ForeignHost(host.into())),
        }
    }

    /// Refuses a write whose `Origin` is missing or not the dashboard's.
    pub fn origin_of(&self, origin: Option<&str>) -> Result<(), Refusal> {
        let origin = origin.ok_or(Refusal::NoOrigin)?;
        match self.hosts.iter().any(|h| origin.eq_ignore_ascii_case(&format!("{}://{h}", self.scheme))) {
            true => Ok(()),
            false => Err(Refusal::ForeignOrigin(origin.into())),
        }
    }
}

/// Refuses a write without the session's CSRF token.
pub fn csrf(given: Option<&str>, expected: &str) -> Result<(), Refusal> {
    match given {
        Some(given)
            if !expected.is_empty() && convoy_shared::constant_time_eq(given.as_bytes(), expected.as_bytes()) =>
        {
            Ok(())
        }
        _ => Err(Refusal::Csrf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::local("127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn reads_need_only_the_listen_host() {
        let g = guard();
        assert_eq!(g.host(Some("127.0.0.1:8080")), Ok(()));
        assert_eq!(g.host(Some("localhost:8080")), Ok(()));
        assert_eq!(g.host(Some("evil.example:8080")), Err(Refusal::ForeignHost("evil.example:8080".into())));
        assert!(g.host(Some("127.0.0.1:8081")).is_err());
        assert!(g.host(None).is_err());
    }

    #[test]
    fn writes_need_the_origin_and_the_token() {
        let g = guard();
        assert_eq!(g.origin_of(Some("http://127.0.0.1:8080")), Ok(()));
        assert_eq!(g.origin_of(Some("http://localhost:8080")), Ok(()));
        assert_eq!(g.origin_of(None), Err(Refusal::NoOrigin));
        assert_eq!(g.origin_of(Some("http://evil.example")), Err(Refusal::ForeignOrigin("http://evil.example".into())));
        assert!(g.origin_of(Some("https://127.0.0.1:8080")).is_err(), "another scheme is another origin");
        assert_eq!(csrf(Some("t0ken"), "t0ken"), Ok(()));
        assert_eq!(csrf(None, "t0ken"), Err(Refusal::Csrf));
        assert_eq!(csrf(Some("guess"), "t0ken"), Err(Refusal::Csrf));
        assert_eq!(csrf(Some(""), ""), Err(Refusal::Csrf), "no session token: no write");
    }

    #[test]
    fn localhost_is_accepted_only_on_loopback() {
        let g = Guard::local("192.0.2.7:8080".parse().unwrap());
        assert!(g.host(Some("localhost:8080")).is_err());
        assert!(g.host(Some("192.0.2.7:8080")).is_ok());
    }

    #[test]
    fn a_public_dashboard_answers_to_its_url_only() {
        let g = Guard::public(&"https://convoy.example.com/".parse().unwrap());
        assert_eq!(g.origin(), "https://convoy.example.com");
        assert!(g.host(Some("convoy.example.com")).is_ok());
        assert!(g.host(Some("127.0.0.1:8443")).is_err());
        assert!(g.origin_of(Some("https://convoy.example.com")).is_ok());
        assert!(g.origin_of(Some("http://convoy.example.com")).is_err());
        let ported = Guard::public(&"https://127.0.0.1:8443".parse().unwrap());
        assert!(
            ported.host(Some("127.0.0.1:8443")).is_ok() && ported.origin_of(Some("https://127.0.0.1:8443")).is_ok()
        );
    }
}
