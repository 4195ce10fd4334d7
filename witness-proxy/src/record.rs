//! What one exchange through the witness proxy leaves behind: a [`Record`],
//! versioned, free of credentials ([`crate::redact`] runs before one is
//! made), identified by the sha256 of its canonical CBOR ([`Record::id`]),
//! stored as `traces/{id}.cbor` and shown to people as JSON.
//!
//! The canonical CBOR is RFC 8949 §4.2.1's deterministic encoding: definite
//! lengths, integers in their shortest form, the keys of every map sorted by
//! their encoded bytes (so shorter keys first). The same record is the same
//! bytes, and so the same id, whoever wrote it; a reader accepts any valid
//! encoding, and re-encodes canonically. A record has no floating-point
//! fields, so the float rules of §4.2.1 never apply.

use ciborium::Value;
use serde::{Deserialize, Serialize};
use store::hash::{Algorithm, Hash, HashError};

/// The record format's version; a reader refuses a newer one.
pub const RECORD_VERSION: u32 = 1;

/// One request and its response, as the proxy saw them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// [`RECORD_VERSION`] when written.
    pub version: u32,
    /// The absolute URL, redacted (`https://host/path?token=<redacted>`).
    pub url: String,
    pub method: String,
    /// The upstream's status; `None` when there was no response (refused,
    /// unreachable, not HTTP): then [`Record::error`] says why.
    pub status: Option<u16>,
    /// The record of the response whose `Location` led here, by URL, and
    /// this exchange's place in that chain (0: not reached by a redirect).
    pub redirected_from: Option<String>,
    pub redirect_hop: u32,
    /// The redirect target this response names (`Location`), redacted.
    pub location: Option<String>,
    /// The upstream's certificate chain, leaf first (empty for plain HTTP).
    pub tls_chain: Vec<Certificate>,
    /// The response headers that matter for provenance, lower-case names:
    /// content-type, content-length, etag, last-modified, content-encoding.
    pub headers: Vec<(String, String)>,
    /// The body as sent to the client (Content-Encoding kept): its size and
    /// sha256 (lower-case hex); `None` when it was not received whole.
    pub body: Option<Body>,
    /// Unix time in milliseconds.
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The build this exchange served, when known.
    pub build: Option<BuildRef>,
    /// Why the exchange failed or was refused, in one line.
    pub error: Option<String>,
    /// For an answer the proxy gave from the witness instead of the
    /// upstream (a replay): the id of the earlier record whose response it
    /// served. Absent from the CBOR when `None`, so records made before
    /// replays existed keep their bytes and ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<String>,
    /// Why a replay was served (the proxy is offline, or what the upstream
    /// did), in one line; `None` unless [`Record::replayed_from`] is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_reason: Option<String>,
}

/// One certificate of an upstream's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// sha256 of the DER, lower-case hex.
    pub sha256: String,
    pub subject: String,
    pub issuer: String,
    /// Validity, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// A complete response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub size: u64,
    /// sha256, lower-case hex: the CAS object's name.
    pub sha256: String,
}

/// The fixed-output derivation an exchange was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// The `.drv` store path.
    pub drv: String,
    pub output: String,
    /// The declared output hash, as `<algo>:<nix32 or base16>` or SRI, as
    /// the derivation wrote it, and its mode (`flat`, `recursive`, `text`).
    pub output_hash: String,
    pub output_hash_mode: String,
    /// The network the build had: `witnessed` (a namespace whose only way
    /// out is the proxy: every fetch is here) or `host` (the proxy
    /// variables only: a fetch around them is not witnessed). Absent in
    /// records made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Why bytes are not a record this armitage can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid CBOR: {0}")]
    Decode(String),
    #[error("record has {0} bytes of garbage after its end")]
    TrailingBytes(usize),
    #[error("record format version {found} is newer than this armitage reads (up to {supported}); upgrade to read it")]
    NewerVersion { found: u64, supported: u32 },
    #[error("CBOR is not a witness record: {0}")]
    NotARecord(String),
}

impl Record {
    /// A record of a request to `url` (redacted by the caller) begun at
    /// `started_ms` (Unix milliseconds), nothing known of its answer yet.
    pub fn new(url: String, method: &str, build: Option<BuildRef>, started_ms: u64) -> Record {
        Record {
            version: RECORD_VERSION,
            url,
            method: method.to_owned(),
            status: None,
            redirected_from: None,
            redirect_hop: 0,
            location: None,
            tls_chain: Vec::new(),
            headers: Vec::new(),
            body: None,
            started_ms,
            ended_ms: 0,
            build,
            error: None,
            replayed_from: None,
            replay_reason: None,
        }
    }

    /// A record of something refused without an exchange (a builder's
    /// attempt to reach the network around the proxy), with `why` as its
    /// error; started and ended at `at_ms`.
    pub fn refused(url: String, method: &str, build: Option<BuildRef>, why: String, at_ms: u64) -> Record {
        Record { ended_ms: at_ms, error: Some(why), ..Record::new(url, method, build, at_ms) }
    }

    /// The record's canonical CBOR (see the module header).
    pub fn to_cbor(&self) -> Vec<u8> {
        // Serializing these plain fields into a `Value` cannot fail: there
        // is no map with non-string keys, no custom serializer.
        let value = Value::serialized(self).expect("a record always converts to a CBOR value");
        to_canonical_cbor(value)
    }

    /// Reads a record from CBOR (canonical or not), refusing a version newer
    /// than [`RECORD_VERSION`], anything that is not a record, and bytes
    /// after the record.
    pub fn from_cbor(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut rest = bytes;
        let value: Value = ciborium::from_reader(&mut rest).map_err(|e| RecordError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RecordError::TrailingBytes(rest.len()));
        }
        let Value::Map(entries) = &value else {
            return Err(RecordError::NotARecord("it is not a map".into()));
        };
        let version = entries
            .iter()
            .find(|(k, _)| k.as_text() == Some("version"))
            .ok_or_else(|| RecordError::NotARecord("it has no version".into()))?;
        let version = match &version.1 {
            Value::Integer(i) => u64::try_from(i128::from(*i)).ok(),
            _ => None,
        }
        .ok_or_else(|| RecordError::NotARecord("its version is not a non-negative integer".into()))?;
        if version > u64::from(RECORD_VERSION) {
            return Err(RecordError::NewerVersion { found: version, supported: RECORD_VERSION });
        }
        value.deserialized().map_err(|e| RecordError::NotARecord(e.to_string()))
    }

    /// The record's id: the sha256 of [`Record::to_cbor`], lower-case hex.
    pub fn id(&self) -> String {
        Algorithm::Sha256.digest(self.to_cbor()).to_base16()
    }

    /// The record for people to read, as indented JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record always converts to JSON")
    }
}

impl BuildRef {
    /// The declared output hash, parsed ([`BuildRef::output_hash`] in any
    /// form Nix writes: `algo:` base-16, nix32 or base-64, or SRI).
    pub fn parsed_output_hash(&self) -> Result<Hash, HashError> {
        Hash::parse_any(&self.output_hash, None)
    }
}

/// Encodes `value` deterministically (RFC 8949 §4.2.1): every map's
/// entries sorted by the encoded bytes of their keys, at every depth.
/// ciborium already writes definite lengths and shortest integers.
pub fn to_canonical_cbor(mut value: Value) -> Vec<u8> {
    canonicalize(&mut value);
    encode(&value)
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing CBOR into memory cannot fail");
    out
}

fn canonicalize(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(canonicalize),
        Value::Tag(_, inner) => canonicalize(inner),
        Value::Map(entries) => {
            let mut keyed: Vec<(Vec<u8>, (Value, Value))> = std::mem::take(entries)
                .into_iter()
                .map(|(mut k, mut v)| {
                    canonicalize(&mut k);
                    canonicalize(&mut v);
                    (encode(&k), (k, v))
                })
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            *entries = keyed.into_iter().map(|(_, entry)| entry).collect();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            version: RECORD_VERSION,
            url: "https://example.org/src.tar.gz".into(),
            method: "GET".into(),
            status: Some(200),
            redirected_from: None,
            redirect_hop: 0,
            location: None,
            tls_chain: vec![Certificate {
                sha256: "00".repeat(32),
                subject: "CN=example.org".into(),
                issuer: "CN=Some CA".into(),
                not_before: -1,
                not_after: 1_900_000_000,
            }],
            headers: vec![("content-type".into(), "application/gzip".into())],
            body: Some(Body { size: 5, sha256: "2c".repeat(32) }),
            started_ms: 1_700_000_000_000,
            ended_ms: 1_700_000_000_250,
            build: Some(BuildRef {
                drv: "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-src.tar.gz.drv".into(),
                output: "out".into(),
                output_hash: "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
                output_hash_mode: "flat".into(),
                network: None,
            }),
            error: None,
            replayed_from: None,
            replay_reason: None,
        }
    }

    fn keys(value: &Value) -> Vec<String> {
        value.as_map().unwrap().iter().map(|(k, _)| k.as_text().unwrap().to_owned()).collect()
    }

    #[test]
    fn the_same_record_is_the_same_bytes_however_it_was_built() {
        let a = sample();
        // Fields given in another order.
        let b = Record {
            replay_reason: None,
            replayed_from: None,
            error: None,
            build: a.build.clone(),
            ended_ms: a.ended_ms,
            started_ms: a.started_ms,
            body: a.body.clone(),
            headers: a.headers.clone(),
            tls_chain: a.tls_chain.clone(),
            location: None,
            redirect_hop: 0,
            redirected_from: None,
            status: Some(200),
            method: "GET".into(),
            url: a.url.clone(),
            version: RECORD_VERSION,
        };
        assert_eq!(a.to_cbor(), b.to_cbor());
        assert_eq!(a.id(), b.id());

        // Written by a plain serializer (fields in declaration order, not
        // canonical), read back, written again: canonical bytes.
        let mut plain = Vec::new();
        ciborium::into_writer(&a, &mut plain).unwrap();
        assert_ne!(plain, a.to_cbor());
        assert_eq!(Record::from_cbor(&plain).unwrap().to_cbor(), a.to_cbor());

        // Through JSON, whose maps come back in another order.
        let json: Record = serde_json::from_str(&a.to_json_pretty()).unwrap();
        assert_eq!(json.to_cbor(), a.to_cbor());

        // Any map, whatever order its entries are in.
        let m1 = Value::Map(vec![(Value::from("bb"), Value::from(1)), (Value::from("a"), Value::from(2))]);
        let m2 = Value::Map(vec![(Value::from("a"), Value::from(2)), (Value::from("bb"), Value::from(1))]);
        assert_eq!(to_canonical_cbor(m1), to_canonical_cbor(m2));
    }

    #[test]
    fn canonical_cbor_is_a_map_with_keys_sorted_by_their_encoding() {
        let bytes = sample().to_cbor();
        // Major type 5 (map) with 14 entries in the header byte itself.
        assert_eq!(bytes[0], 0xa0 | 14);
        // The first key: a 3-byte text string, "url".
        assert_eq!(&bytes[1..5], b"\x63url");
        let value: Value = ciborium::from_reader(&bytes[..]).unwrap();
        assert_eq!(
            keys(&value),
            [
                "url",
                "body",
                "build",
                "error",
                "method",
                "status",
                "headers",
                "version",
                "ended_ms",
                "location",
                "tls_chain",
                "started_ms",
                "redirect_hop",
                "redirected_from"
            ]
        );
        let body = &value.as_map().unwrap()[1].1;
        assert_eq!(keys(body), ["size", "sha256"]);
        // Shortest integers: version 1 is the single byte 0x01.
        let version_at = bytes.windows(8).position(|w| w == b"\x67version").unwrap();
        assert_eq!(bytes[version_at + 8], 0x01);
    }

    #[test]
    fn a_record_written_before_replays_keeps_its_bytes_and_id() {
        // The id of `sample()` as armitage wrote it before records had
        // replay fields: a record without them must stay these bytes.
        assert_eq!(sample().id(), "f05e4fbd1097f4b31e12644d6f4df9cfea3752fae5ef1f03178f205f3a79e351");
        assert!(!sample().to_json_pretty().contains("replay"));

        // A replay's record carries them, and reads back with them.
        let replayed =
            Record { replayed_from: Some("ab".repeat(32)), replay_reason: Some("offline".into()), ..sample() };
        let value: Value = ciborium::from_reader(&replayed.to_cbor()[..]).unwrap();
        let keys = keys(&value);
        assert!(keys.iter().any(|k| k == "replayed_from") && keys.iter().any(|k| k == "replay_reason"), "{keys:?}");
        assert_eq!(Record::from_cbor(&replayed.to_cbor()).unwrap(), replayed);
        assert_ne!(replayed.id(), sample().id());
    }

    #[test]
    fn a_record_survives_the_round_trip() {
        let r = sample();
        assert_eq!(Record::from_cbor(&r.to_cbor()).unwrap(), r);
        let failed =
            Record { status: None, body: None, build: None, error: Some("connection refused".into()), ..r.clone() };
        assert_eq!(Record::from_cbor(&failed.to_cbor()).unwrap(), failed);
        assert_eq!(r.id().len(), 64);
        assert_ne!(r.id(), failed.id());
    }

    #[test]
    fn a_newer_version_is_refused() {
        let newer = Record { version: RECORD_VERSION + 1, ..sample() };
        let err = Record::from_cbor(&newer.to_cbor()).unwrap_err();
        assert_eq!(err, RecordError::NewerVersion { found: u64::from(RECORD_VERSION) + 1, supported: RECORD_VERSION });
        assert!(err.to_string().contains("is newer than this armitage reads"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(Record::from_cbor(b""), Err(RecordError::Decode(_))));
        assert!(matches!(Record::from_cbor(&[0xff, 0x00, 0x13]), Err(RecordError::Decode(_))));
        assert!(matches!(Record::from_cbor(&encode(&Value::from(7))), Err(RecordError::NotARecord(_))));
        let no_version = Value::Map(vec![(Value::from("url"), Value::from("x"))]);
        assert!(matches!(Record::from_cbor(&encode(&no_version)), Err(RecordError::NotARecord(_))));
        let only_version = Value::Map(vec![(Value::from("version"), Value::from(1))]);
        assert!(matches!(Record::from_cbor(&encode(&only_version)), Err(RecordError::NotARecord(_))));
        let mut trailing = sample().to_cbor();
        trailing.push(0);
        assert_eq!(Record::from_cbor(&trailing), Err(RecordError::TrailingBytes(1)));
        let mut truncated = sample().to_cbor();
        truncated.pop();
        assert!(matches!(Record::from_cbor(&truncated), Err(RecordError::Decode(_))));
    }

    #[test]
    fn the_declared_output_hash_parses_in_every_form() {
        let mut build = sample().build.unwrap();
        let sri = build.parsed_output_hash().unwrap();
        for form in [sri.to_typed(store::hash::Encoding::Nix32), sri.to_typed(store::hash::Encoding::Base16)] {
            build.output_hash = form;
            assert_eq!(build.parsed_output_hash().unwrap(), sri);
        }
    }
}
