//! The worker protocol's request decoder (`read_request`) on arbitrary
//! bytes, at every protocol minor the daemon serves (1.10 to 1.38), with
//! the daemon's limits; after a request that decodes, the rest of the input
//! goes through a `FramedReader` as an upload would.
//!
//! Input: one byte choosing the operation word (below 0xf0: that number,
//! so every operation is reached; else the next 8 bytes, little-endian),
//! then the request's fields. Properties: no panic, no hang, nothing read
//! past the input, and memory bounded by the input (libFuzzer's malloc
//! limit catches an allocation sized by a declared length). Realisations
//! and derivation output ids, which the daemon parses from decoded
//! requests, are parsed too and must print back to themselves.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use store::realisation::{DrvOutput, Realisation};
use store::store_path::StoreDir;
use worker_protocol::{FramedReader, Limits, Request, read_request};
use tokio::io::AsyncReadExt;

/// Polls to completion: reading from a byte slice never waits.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("decoding a byte slice waited for more input"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (op, fields) = if selector < 0xf0 {
        (u64::from(selector), rest)
    } else if rest.len() >= 8 {
        let (word, fields) = rest.split_at(8);
        (u64::from_le_bytes(word.try_into().unwrap()), fields)
    } else {
        return;
    };
    let dir = StoreDir::default();
    for minor in 10..=38 {
        let mut r = fields;
        let decoded = block_on(read_request(op, &mut r, &dir, minor, &Limits::DEFAULT));
        assert!(r.len() <= fields.len());
        match &decoded {
            Ok(Request::RegisterDrvOutput(json)) => {
                if let Ok(r) = Realisation::from_json(json, "fuzz") {
                    let again = Realisation::from_json(&r.to_json().to_string(), "printed").expect("printed JSON parses");
                    assert_eq!(again, r);
                }
            }
            Ok(Request::QueryRealisation(id) | Request::RegisterDrvOutputLegacy { id, .. }) => {
                if let Ok(o) = DrvOutput::parse(id) {
                    assert_eq!(DrvOutput::parse(&o.to_string()).expect("a printed id parses"), o);
                }
            }
            _ => {}
        }
        if decoded.is_ok() {
            let mut framed = FramedReader::new(&mut r);
            let mut sink = Vec::new();
            if block_on(framed.read_to_end(&mut sink)).is_ok() {
                assert!(framed.is_done());
            }
            assert!(sink.len() <= fields.len());
        }
    }
});
