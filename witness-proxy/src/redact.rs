//! Credentials never stored: what a record keeps of a URL or a header
//! passes through here first.
//!
//! [`redact_url`] replaces a URL's userinfo and the values of query (and
//! fragment) parameters that look secret with `<redacted>`, leaving every
//! other byte as it was, in its order: the URL stays what the client asked
//! for, minus the secret. [`redact_header`] drops headers that carry
//! credentials (`Authorization`, `Cookie`, ...) and redacts the URLs in
//! those that name one (`Location`). netrc logins and private tokens
//! (GitHub, GitLab, signed S3 URLs) pass through the proxy, so erring
//! towards redacting too much is the intent: a redacted value that was not
//! secret costs a little provenance, a kept secret leaks.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Query parameter names whose values are secret, compared after
/// percent-decoding and ASCII lower-casing.
const SECRET_PARAMS: &[&str] = &[
    // Signed S3 and GCS URLs.
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    // Azure SAS, CloudFront and generic signatures.
    "signature",
    "sig",
    // Tokens, keys and passwords in their common spellings.
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "private_token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "client_secret",
    // OAuth authorization codes.
    "code",
];

/// Name endings that mark a parameter or header as secret whatever comes
/// before (`gh_token`, `X-Upload-Secret`).
const SECRET_SUFFIXES: &[&str] =
    &["token", "secret", "password", "signature", "credential", "credentials", "api_key", "api-key", "apikey"];

/// Headers that carry credentials, lower-case.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "set-cookie2",
    "x-amz-security-token",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "private-token",
    "job-token",
    "deploy-token",
    "x-goog-api-key",
    "x-registry-auth",
];

/// Headers whose value is a URL, kept redacted.
const URL_HEADERS: &[&str] = &["location", "content-location", "referer", "origin"];

/// Whether a query parameter of this name (raw, as in the URL) holds a
/// secret.
pub fn is_secret_param(name: &str) -> bool {
    let name = percent_decode_lower(name);
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Whether a header of this name carries credentials and is never stored.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    SECRET_HEADERS.contains(&name.as_str())
        || name.contains("cookie")
        || name.contains("authorization")
        || SECRET_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// What a record may keep of a header: `None` for one that carries
/// credentials, the redacted URL for one that names a URL, else the value.
pub fn redact_header(name: &str, value: &str) -> Option<String> {
    if is_secret_header(name) {
        return None;
    }
    let lower = name.trim().to_ascii_lowercase();
    if URL_HEADERS.contains(&lower.as_str()) { Some(redact_url(value)) } else { Some(value.to_owned()) }
}

/// The URL with its userinfo and secret parameter values replaced by
/// [`REDACTED`]; everything else is kept byte for byte. Works on absolute
/// URLs, scheme-relative ones (`//host/path`) and relative references (a
/// `Location` of `/path?token=x`). Redacting twice changes nothing more.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&redact_userinfo(before_query));
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_params(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&redact_params(fragment));
    }
    out
}

/// `scheme://user:pw@host/path` → `scheme://<redacted>@host/path`.
fn redact_userinfo(s: &str) -> String {
    let authority_start = if let Some((scheme, _)) = s.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) {
        scheme.len() + 3
    } else if s.starts_with("//") {
        2
    } else {
        return s.to_owned();
    };
    let rest = &s[authority_start..];
    let authority_len = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(0) | None => s.to_owned(),
        Some(at) => format!("{}{REDACTED}{}", &s[..authority_start], &rest[at..]),
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `a=1&token=x&b` → `a=1&token=<redacted>&b`.
fn redact_params(params: &str) -> String {
    let pieces: Vec<String> = params
        .split('&')
        .map(|piece| match piece.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
            _ => piece.to_owned(),
        })
        .collect();
    pieces.join("&")
}

/// Decodes `%XX` (and `+` as a space) and lower-cases ASCII, for comparing
/// names only.
fn percent_decode_lower(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed() {
        assert_eq!(redact_url("https://user:pw@h/"), "https://<redacted>@h/");
        assert_eq!(redact_url("https://ghp_abc@github.com/o/r.git"), "https://<redacted>@github.com/o/r.git");
        assert_eq!(redact_url("http://u:p@host:8080"), "http://<redacted>@host:8080");
        assert_eq!(redact_url("//u:p@host/x"), "//<redacted>@host/x");
        // An `@` in the password itself: everything up to the last one.
        assert_eq!(redact_url("https://u:p@ss@h/a@b"), "https://<redacted>@h/a@b");
        // An `@` in the path or query is not userinfo.
        assert_eq!(redact_url("https://h/~u@x?m=a@b"), "https://h/~u@x?m=a@b");
        assert_eq!(redact_url("/next?to=https://u:p@h/"), "/next?to=https://u:p@h/");
    }

    #[test]
    fn secret_parameters_lose_their_values_and_nothing_else_changes() {
        let url = "https://bucket.s3.amazonaws.com/f.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-Credential=AKIA%2F20240101&X-Amz-Date=20240101T000000Z\
                   &X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=deadbeef";
        assert_eq!(
            redact_url(url),
            "https://bucket.s3.amazonaws.com/f.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=<redacted>&X-Amz-Date=20240101T000000Z\
             &X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=<redacted>"
        );
        for name in [
            "x-amz-security-token",
            "signature",
            "sig",
            "TOKEN",
            "access_token",
            "auth",
            "key",
            "api_key",
            "ApiKey",
            "password",
            "secret",
            "client_secret",
            "code",
            "gh_token",
            "%74oken",
        ] {
            assert_eq!(
                redact_url(&format!("http://h/p?a=1&{name}=s3cr3t&b")),
                format!("http://h/p?a=1&{name}=<redacted>&b")
            );
        }
        // Kept byte for byte: odd encodings, empty pieces, bare names, order.
        let plain = "http://h/a%20b/?z=1&&y&x=%41+b;c&keyword=2&tokens_left=3#frag";
        assert_eq!(redact_url(plain), plain);
        assert_eq!(redact_url("https://h/cb#access_token=abc&state=x"), "https://h/cb#access_token=<redacted>&state=x");
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        for url in ["https://u:p@h/?token=a&b=c", "http://h/", "/relative?sig=x", "not a url at all", ""] {
            let once = redact_url(url);
            assert_eq!(redact_url(&once), once, "{url}");
        }
    }

    #[test]
    fn credential_headers_are_never_kept() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Amz-Security-Token",
            "X-Api-Key",
            "PRIVATE-TOKEN",
            "X-GitHub-Token",
        ] {
            assert!(is_secret_header(name), "{name}");
            assert_eq!(redact_header(name, "v"), None, "{name}");
        }
        for name in ["content-type", "content-length", "etag", "last-modified", "www-authenticate", "content-encoding"]
        {
            assert!(!is_secret_header(name), "{name}");
            assert_eq!(redact_header(name, "v").as_deref(), Some("v"), "{name}");
        }
        assert_eq!(
            redact_header("Location", "https://u:p@h/x?sig=1").as_deref(),
            Some("https://<redacted>@h/x?sig=<redacted>")
        );
    }

    #[test]
    fn percent_decoding_is_only_for_comparing() {
        assert_eq!(percent_decode_lower("%41%zz+%"), "a%zz %");
        assert_eq!(percent_decode_lower("%4"), "%4");
    }
}
