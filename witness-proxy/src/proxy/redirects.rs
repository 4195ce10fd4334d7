//! Redirect chains. The proxy follows no redirect: the client does, and
//! each hop is its own exchange. A redirect's target (its `Location`,
//! resolved against the request's URL) is remembered for a while, so the
//! record of the request that follows it names where it came from and its
//! place in the chain. Bounded: the oldest links go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Links remembered per proxy.
const MAX_LINKS: usize = 1024;

/// Where a URL was reached from: the source's URL (redacted) and the hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub from: String,
    pub hop: u32,
}

/// Redirect targets awaiting their request, by build and URL.
#[derive(Default)]
pub(super) struct Redirects {
    links: Mutex<Links>,
}

#[derive(Default)]
struct Links {
    by_target: HashMap<(String, String), Link>,
    order: VecDeque<(String, String)>,
}

impl Redirects {
    /// `target` (an absolute URL, not redacted) was named by a redirect.
    pub fn link(&self, scope: &str, target: String, link: Link) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (scope.to_owned(), target);
        if links.by_target.insert(key.clone(), link).is_none() {
            links.order.push_back(key);
        }
        while links.by_target.len() > MAX_LINKS {
            let Some(oldest) = links.order.pop_front() else { break };
            links.by_target.remove(&oldest);
        }
    }

    /// The link that led to `url`, if a redirect named it; forgotten then.
    pub fn take(&self, scope: &str, url: &str) -> Option<Link> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (scope.to_owned(), url.to_owned());
        let link = links.by_target.remove(&key)?;
        links.order.retain(|k| *k != key);
        Some(link)
    }
}

/// `location` resolved against `base` (an absolute `scheme://authority/...`
/// URL), fragment dropped: the URL a client following it will request.
pub(super) fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.split('#').next().unwrap_or_default().trim();
    let (scheme, rest) = base.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let origin = &base[..scheme.len() + 3 + authority_end];
    let base_ref = &rest[authority_end..];
    let base_path = base_ref.split('?').next().unwrap_or_default();

    if has_scheme(location) {
        return Some(location.to_owned());
    }
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.is_empty() {
        return Some(format!("{origin}{base_ref}"));
    }
    if location.starts_with('?') {
        return Some(format!("{origin}{base_path}{location}"));
    }
    let (path, query) = match location.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (location, None),
    };
    let merged = if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = base_path.rfind('/').map(|i| &base_path[..=i]).unwrap_or("/");
        format!("{dir}{path}")
    };
    let mut out = format!("{origin}{}", remove_dot_segments(&merged));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// RFC 3986 section 5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut joined = format!("/{}", out.join("/"));
    if trailing_slash && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_as_clients_do() {
        let base = "https://example.org:8443/a/b/c?q=1";
        let cases = [
            ("https://other.example/x", "https://other.example/x"),
            ("//cdn.example/y", "https://cdn.example/y"),
            ("/file", "https://example.org:8443/file"),
            ("d", "https://example.org:8443/a/b/d"),
            ("../d?x=2#frag", "https://example.org:8443/a/d?x=2"),
            ("./", "https://example.org:8443/a/b/"),
            ("../../../../e", "https://example.org:8443/e"),
            ("?z", "https://example.org:8443/a/b/c?z"),
        ];
        for (location, want) in cases {
            assert_eq!(resolve(base, location).as_deref(), Some(want), "{location}");
        }
        assert_eq!(resolve("http://h", "x").as_deref(), Some("http://h/x"));
    }

    #[test]
    fn links_are_taken_once_and_bounded() {
        let r = Redirects::default();
        r.link("b", "https://h/x".into(), Link { from: "https://h/r".into(), hop: 1 });
        assert_eq!(r.take("other", "https://h/x"), None);
        assert_eq!(r.take("b", "https://h/x"), Some(Link { from: "https://h/r".into(), hop: 1 }));
        assert_eq!(r.take("b", "https://h/x"), None);
        for i in 0..MAX_LINKS + 5 {
            r.link("b", format!("https://h/{i}"), Link { from: String::new(), hop: 1 });
        }
        assert!(r.take("b", "https://h/0").is_none());
        assert!(r.take("b", &format!("https://h/{}", MAX_LINKS + 4)).is_some());
    }
}
