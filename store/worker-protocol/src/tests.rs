use super::*;
use store::store_path::StoreDir;
use tokio::io::AsyncReadExt;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // The codec only needs a poller; no runtime features are involved.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn the_is_valid_path_example_decodes() {
    // worker-protocol.md §2's worked example.
    let path = "/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello";
    let mut bytes = 1u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(path.len() as u64).to_le_bytes());
    bytes.extend_from_slice(path.as_bytes());
    bytes.extend_from_slice(&[0; 7]);
    let mut r = &bytes[..];
    let req = block_on(async {
        let op = r.read_u64_le_wire().await.unwrap();
        read_request(op, &mut r, &StoreDir::default(), 38, &Limits::DEFAULT).await
    })
    .unwrap();
    assert_eq!(req, Request::IsValidPath(StoreDir::default().parse_path(path).unwrap()));
    assert!(r.is_empty(), "the whole request was consumed");
}

#[test]
fn strings_are_bounded_and_padding_checked() {
    let mut huge = (1u64 << 60).to_le_bytes().to_vec();
    huge.extend_from_slice(b"xxxxxxxx");
    let err = block_on(async { (&huge[..]).read_string("path", &Limits::DEFAULT).await }).unwrap_err();
    assert!(matches!(err, ProtoError::TooLong { len, .. } if len == 1 << 60));
    let mut bad_pad = 1u64.to_le_bytes().to_vec();
    bad_pad.extend_from_slice(b"a\0\0\0\0\0\0\x01");
    let err = block_on(async { (&bad_pad[..]).read_string("s", &Limits::DEFAULT).await }).unwrap_err();
    assert!(matches!(err, ProtoError::BadPadding));
    let err = block_on(async { (&[1u8, 0, 0][..]).read_u64_le_wire().await }).unwrap_err();
    assert!(err.is_eof());
}

#[test]
fn unknown_and_removed_operations() {
    let dir = StoreDir::default();
    let err = block_on(read_request(99, &mut &b""[..], &dir, 38, &Limits::DEFAULT)).unwrap_err();
    assert_eq!(err.to_string(), "invalid operation 99");
    let err = block_on(read_request(24, &mut &b""[..], &dir, 38, &Limits::DEFAULT)).unwrap_err();
    assert_eq!(err.to_string(), "Removed operation 24");
}

#[test]
fn framed_reader_reassembles_frames_and_stops_at_the_terminator() {
    let mut stream = Vec::new();
    for frame in [&b"hello "[..], b"framed", b" world"] {
        stream.extend_from_slice(&(frame.len() as u64).to_le_bytes());
        stream.extend_from_slice(frame);
    }
    stream.extend_from_slice(&0u64.to_le_bytes());
    stream.extend_from_slice(b"NEXT");
    let mut rest = &stream[..];
    let mut framed = FramedReader::new(&mut rest);
    let mut out = Vec::new();
    block_on(framed.read_to_end(&mut out)).unwrap();
    assert_eq!(out, b"hello framed world");
    assert!(framed.is_done());
    assert_eq!(rest, b"NEXT");
    // A stream cut inside a frame is an error, not a short read.
    let cut = &stream[..10];
    let mut out = Vec::new();
    assert!(block_on(FramedReader::new(cut).read_to_end(&mut out)).is_err());
}

#[test]
fn derived_paths_per_minor() {
    let dir = StoreDir::default();
    let drv = "/nix/store/8fx8g9z51y79wk98hj0bgxa58p186zsi-hello.drv";
    // Bare .drv: all outputs before 1.30, the file itself from 1.30.
    assert!(matches!(DerivedPath::parse(drv, &dir, 29).unwrap(), DerivedPath::Built { outputs: None, .. }));
    assert!(matches!(DerivedPath::parse(drv, &dir, 30).unwrap(), DerivedPath::Opaque(_)));
    let star = format!("{drv}!*");
    let all = DerivedPath::parse(&star, &dir, 30).unwrap();
    assert_eq!(all.render(&dir, 30), star);
    assert_eq!(all.render(&dir, 29), drv);
    let two = DerivedPath::parse(&format!("{drv}!out,dev"), &dir, 38).unwrap();
    assert_eq!(two.render(&dir, 38), format!("{drv}!dev,out"));
    assert!(DerivedPath::parse(&format!("{drv}!out!out"), &dir, 38).is_err());
}

/// Hands out at most three bytes per read, as a slow socket does.
struct Trickle<'a>(&'a [u8]);

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.0.len().min(3).min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn strings_arriving_in_pieces_are_read_whole_and_short_ones_are_eof() {
    // Strings are read as their bytes arrive (a declared length reserves
    // nothing beyond the first chunk), across reads of any size.
    let body: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
    let mut wire = (body.len() as u64).to_le_bytes().to_vec();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(&[0; 5]);
    wire.extend_from_slice(b"NEXT");
    let mut r = Trickle(&wire);
    let got = block_on(r.read_bytes_limited("text", 1 << 20)).unwrap();
    assert_eq!(got, body);
    assert_eq!(r.0, b"NEXT", "padding consumed, nothing more");
    // Declared 64 MiB, sent 8 bytes: end-of-file, not a short string.
    let mut short = (64u64 << 20).to_le_bytes().to_vec();
    short.extend_from_slice(b"12345678");
    let err = block_on(Trickle(&short).read_bytes_limited("text", 64 << 20)).unwrap_err();
    assert!(err.is_eof(), "{err}");
}
