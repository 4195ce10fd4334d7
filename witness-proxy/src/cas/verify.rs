//! A reader that checks an object's bytes against its name as they pass:
//! what every backend's [`super::Cas::get`] returns, so that tampered or
//! rotted bytes end in an error and are never passed off as the object.

use super::backend::CasError;
use super::id::ObjectId;
use std::io::{self, Read};
use store::hash::HashSink;

/// Passes an object's bytes through, hashing them; at end of stream it
/// returns `Ok(0)` only if they hash to the object's name, and otherwise an
/// `io::Error` of kind `InvalidData` carrying [`CasError::Tampered`] (on
/// that read and every later one).
///
/// The check happens at end of stream: a caller that passes bytes on as it
/// reads them has passed on unchecked bytes until then, and must treat the
/// whole stream as invalid if the last read fails.
pub struct VerifyingReader<R> {
    inner: R,
    id: ObjectId,
    state: State,
}

enum State {
    Reading(Box<HashSink>),
    Good,
    Tampered(ObjectId),
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, id: ObjectId) -> Self {
        VerifyingReader { inner, id, state: State::Reading(Box::new(ObjectId::hasher())) }
    }

    /// The name the bytes are checked against.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// Whether the stream was read to its end and hashed to the name.
    pub fn verified(&self) -> bool {
        matches!(self.state, State::Good)
    }
}

fn tampered(id: ObjectId, actual: ObjectId) -> io::Error {
    CasError::Tampered { id, actual }.into()
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let sink = match &mut self.state {
            State::Good => return Ok(0),
            State::Tampered(actual) => return Err(tampered(self.id, *actual)),
            State::Reading(sink) => sink,
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            sink.update(&buf[..n]);
            return Ok(n);
        }
        // End of stream: settle, once.
        let (actual, _) = ObjectId::finish(HashSink::clone(sink));
        if actual == self.id {
            self.state = State::Good;
            Ok(0)
        } else {
            tracing::warn!(object = %self.id, %actual, "CAS object does not hash to its name");
            self.state = State::Tampered(actual);
            Err(tampered(self.id, actual))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_bytes_end_cleanly() {
        let id = ObjectId::of(b"hello");
        let mut r = VerifyingReader::new(&b"hello"[..], id);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert!(r.verified());
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn tampered_bytes_end_in_an_error_every_time() {
        let id = ObjectId::of(b"hello");
        let mut r = VerifyingReader::new(&b"hellO"[..], id);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let actual = ObjectId::of(b"hellO");
        assert!(
            matches!(CasError::in_io(&err), Some(CasError::Tampered { id: i, actual: a }) if *i == id && *a == actual)
        );
        assert_eq!(err.to_string(), format!("object {id} is tampered: its bytes hash to {actual}"));
        assert!(!r.verified());
        assert!(r.read(&mut [0u8; 4]).is_err());
    }

    #[test]
    fn an_empty_buffer_does_not_count_as_end_of_stream() {
        let id = ObjectId::of(b"x");
        let mut r = VerifyingReader::new(&b"x"[..], id);
        assert_eq!(r.read(&mut []).unwrap(), 0);
        assert!(!r.verified());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.verified());
    }
}
