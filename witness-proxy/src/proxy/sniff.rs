//! What a client sends through a CONNECT tunnel, told from its first bytes:
//! a TLS ClientHello, plaintext HTTP, or something else (refused: the proxy
//! never tunnels bytes it cannot record).

/// What the first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniff {
    /// A TLS handshake record (0x16) of TLS 1.x (0x03).
    Tls,
    /// An HTTP/1 request line's method and its space.
    Http,
    /// Neither, whatever follows.
    Other,
    /// Too few bytes to tell.
    NeedMore,
}

/// Enough bytes to tell every case apart (`OPTIONS ` is the longest).
pub(super) const SNIFF_BYTES: usize = 8;

const METHODS: [&[u8]; 8] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE "];

pub(super) fn sniff(bytes: &[u8]) -> Sniff {
    match bytes {
        [] => Sniff::NeedMore,
        [0x16] => Sniff::NeedMore,
        [0x16, 0x03, ..] => Sniff::Tls,
        _ if METHODS.iter().any(|m| bytes.starts_with(m)) => Sniff::Http,
        _ if METHODS.iter().any(|m| m.starts_with(bytes)) => Sniff::NeedMore,
        _ => Sniff::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_tls_http_and_the_rest_apart() {
        assert_eq!(sniff(b"\x16\x03\x01\x02\x00"), Sniff::Tls);
        assert_eq!(sniff(b"\x16"), Sniff::NeedMore);
        assert_eq!(sniff(b"\x16\x02"), Sniff::Other);
        assert_eq!(sniff(b"GET /"), Sniff::Http);
        assert_eq!(sniff(b"OPTIONS "), Sniff::Http);
        assert_eq!(sniff(b"OPTIO"), Sniff::NeedMore);
        assert_eq!(sniff(b"POSTX"), Sniff::Other);
        assert_eq!(sniff(b"SSH-2.0-"), Sniff::Other);
        assert_eq!(sniff(b"\0\x01hello"), Sniff::Other);
        assert_eq!(sniff(b""), Sniff::NeedMore);
    }

    #[test]
    fn eight_bytes_always_decide() {
        for m in METHODS {
            assert!(m.len() <= SNIFF_BYTES);
        }
    }
}
