//! Where a request goes: scheme, host and port, from an absolute-form URI or
//! a CONNECT authority, and the URL strings records and redirects use.

use hyper::Uri;
use rustls_pki_types::ServerName;
use std::fmt;

/// An upstream origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `https` (TLS upstream) rather than `http`.
    pub tls: bool,
    /// Lower case; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

/// The longest host name DNS allows.
const MAX_HOST: usize = 253;

impl Target {
    /// From an absolute-form request target (`http://host[:port]/...`);
    /// `None` for another scheme or no host.
    pub fn from_absolute(uri: &Uri) -> Option<Target> {
        let tls = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") => false,
            s if s.eq_ignore_ascii_case("https") => true,
            _ => return None,
        };
        let authority = uri.authority()?;
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Self::new(tls, authority.host(), port)
    }

    /// From a CONNECT request target (`host:port`, the port required).
    pub fn from_connect(uri: &Uri, tls: bool) -> Option<Target> {
        let authority = uri.authority()?;
        Self::new(tls, authority.host(), authority.port_u16()?)
    }

    fn new(tls: bool, host: &str, port: u16) -> Option<Target> {
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOST || port == 0 {
            return None;
        }
        Some(Target { tls, host: host.to_ascii_lowercase(), port })
    }

    pub fn with_tls(&self, tls: bool) -> Target {
        Target { tls, ..self.clone() }
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    fn default_port(&self) -> u16 {
        if self.tls { 443 } else { 80 }
    }

    fn bracketed_host(&self) -> String {
        if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() }
    }

    /// `host:port` as CONNECT names it.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The `Host` header value: the port only when not the scheme's.
    pub fn host_header(&self) -> String {
        if self.port == self.default_port() { self.bracketed_host() } else { self.authority() }
    }

    /// The absolute URL of `path_and_query` (which starts with `/`) here.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}://{}{}", self.scheme(), self.host_header(), path_and_query)
    }

    /// The name to verify the upstream's certificate against.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        ServerName::try_from(self.host.clone()).ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn absolute_form() {
        let t = Target::from_absolute(&uri("http://Example.org/a?b")).unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "example.org", 80));
        assert_eq!(t.url("/a?b"), "http://example.org/a?b");
        let t = Target::from_absolute(&uri("https://[::1]:8443/")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.url("/"), "https://[::1]:8443/");
        assert_eq!(t.host_header(), "[::1]:8443");
        assert!(Target::from_absolute(&uri("ftp://example.org/x")).is_none());
        assert!(Target::from_absolute(&uri("/relative")).is_none());
    }

    #[test]
    fn connect_form() {
        let t = Target::from_connect(&uri("example.org:443"), true).unwrap();
        assert_eq!(t.url("/x"), "https://example.org/x");
        assert_eq!(t.authority(), "example.org:443");
        assert_eq!(t.with_tls(false).url("/x"), "http://example.org:443/x");
        assert!(Target::from_connect(&uri("127.0.0.1:0"), true).is_none());
        let t = Target::from_connect(&uri("127.0.0.1:8443"), true).unwrap();
        assert!(matches!(t.server_name(), Some(ServerName::IpAddress(_))));
    }
}
