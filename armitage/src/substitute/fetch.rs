//! Fetching one path: its file is opened, decompressed and streamed into
//! [`LocalStore::add_nar`], which unpacks it and checks `NarHash` and
//! `NarSize` before registering it.
//!
//! The stream ([`NarStream`]) checks the rest: when the NAR's last byte is
//! due, it first makes sure the decompressed stream ends there and the
//! downloaded file matches `FileSize` and `FileHash`, and fails the read
//! otherwise, so the store never registers a path from a file that does
//! not match its narinfo. When anything fails midway, the rest of the
//! file is read and its hash checked so the error names the root cause
//! ("hash mismatch in file downloaded from ...") rather than a symptom (a
//! decompression or NAR syntax error).

use super::cache::BinaryCache;
use super::decompress::{Decoder, Method};
use super::error::SubstituteError;
use super::http::Client;
use local_store::{AddOptions, LocalStore};
use std::io::{self, BufReader, Read};
use store::hash::{Algorithm, Encoding, Hash, HashSink};
use store::narinfo::NarInfo;
use store::path_info::PathInfo;

/// Buffer between the decompressor and the NAR unpacker.
const BUFFER: usize = 256 * 1024;

pub(super) fn fetch(
    store: &LocalStore,
    client: &Client,
    cache: &BinaryCache,
    info: &NarInfo,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PathInfo, SubstituteError> {
    let path = store.display(&info.path);
    if info.nar_hash.algorithm() != Algorithm::Sha256 {
        return Err(SubstituteError::UncheckableNarHash {
            cache: cache.url.clone(),
            path,
            algorithm: info.nar_hash.algorithm().name().to_owned(),
        });
    }
    let method = Method::from_name(&info.compression).ok_or_else(|| SubstituteError::UnknownCompression {
        method: info.compression.clone(),
        path: path.clone(),
        cache: cache.url.clone(),
    })?;
    let url = cache.file_url(&info.url);
    let body = cache
        .open(client, &info.url)?
        .ok_or_else(|| SubstituteError::Gone { name: info.url.clone(), cache: cache.url.clone() })?;
    let source =
        FileReader { inner: body, hash: info.file_hash.map(|h| HashSink::new(h.algorithm())), size: 0, error: None };
    let decoder = Decoder::new(method, source).map_err(|e| SubstituteError::Decompress {
        url: url.clone(),
        method: info.compression.clone(),
        why: e.to_string(),
    })?;
    let mut stream = NarStream {
        decoder,
        url,
        method: info.compression.clone(),
        path: path.clone(),
        cache: cache.url.clone(),
        nar_size: info.nar_size,
        done: 0,
        file_hash: info.file_hash,
        file_size: info.file_size,
        progress,
        verified: false,
        failure: None,
    };

    let path_info = PathInfo::from(info);

    let added = store.add_nar(&path_info, &mut BufReader::with_capacity(BUFFER, &mut stream), AddOptions::default());
    match added {
        Ok(()) => Ok(store.path_info(&info.path)?),
        Err(e) => Err(match stream.failure.take() {
            Some(failure) => failure,
            None if stream.verified => e.into(),
            None => stream.diagnose(e.into()),
        }),
    }
}

/// The downloaded file, hashed and counted as it is read.
struct FileReader {
    inner: Box<dyn Read + Send>,
    hash: Option<HashSink>,
    size: u64,
    /// The last read error (a transfer failure, not a decompression one).
    error: Option<String>,
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                if let Some(h) = &mut self.hash {
                    h.update(&buf[..n]);
                }
                self.size += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// The NAR as decompressed from the file; see the module docs.
struct NarStream<'a> {
    decoder: Decoder<FileReader>,
    url: String,
    method: String,
    path: String,
    cache: String,
    nar_size: u64,
    /// NAR bytes handed out.
    done: u64,
    file_hash: Option<Hash>,
    file_size: Option<u64>,
    progress: &'a mut dyn FnMut(u64, u64),
    /// The file was read to its end and matched the narinfo.
    verified: bool,
    /// Why a read failed, in full (the store sees only its text).
    failure: Option<SubstituteError>,
}

impl NarStream<'_> {
    /// Records `e` as the reason the stream failed.
    fn fail(&mut self, e: SubstituteError) -> io::Error {
        let err = io::Error::other(e.to_string());
        self.failure = Some(e);
        err
    }

    /// The error of a failed read of the decoder: the transfer's, or the
    /// decompressor's.
    fn read_error(&mut self, e: io::Error) -> SubstituteError {
        match self.decoder.source_mut().error.clone() {
            Some(why) => SubstituteError::Download { url: self.url.clone(), why },
            None => {
                SubstituteError::Decompress { url: self.url.clone(), method: self.method.clone(), why: e.to_string() }
            }
        }
    }

    /// At the NAR's end: the decompressed stream must end too, and the file
    /// must match its size and hash.
    fn verify(&mut self) -> Result<(), SubstituteError> {
        let mut extra = [0u8; 1];
        loop {
            match self.decoder.read(&mut extra) {
                Ok(0) => break,
                Ok(_) => {
                    return Err(SubstituteError::TooLong {
                        path: self.path.clone(),
                        cache: self.cache.clone(),
                        nar_size: self.nar_size,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_error(e)),
            }
        }
        self.drain()?;
        self.check_file()?;
        self.verified = true;
        Ok(())
    }

    /// Reads what is left of the file (bytes after the compressed stream
    /// count towards its hash), but no more than it can be.
    fn drain(&mut self) -> Result<(), SubstituteError> {
        let limit = match self.file_size {
            Some(s) => s + 1,
            None => self.nar_size + self.nar_size / 8 + (1 << 20),
        };
        let source = self.decoder.source_mut();
        let left = limit.saturating_sub(source.size);
        io::copy(&mut source.take(left), &mut io::sink())
            .map_err(|e| SubstituteError::Download { url: self.url.clone(), why: e.to_string() })?;
        Ok(())
    }

    /// Compares the file read so far with `FileSize` and `FileHash`.
    fn check_file(&mut self) -> Result<(), SubstituteError> {
        let source = self.decoder.source_mut();
        if let Some(specified) = self.file_size
            && source.size != specified
            && self.file_hash.is_none()
        {
            return Err(SubstituteError::FileSizeMismatch { url: self.url.clone(), specified, got: source.size });
        }
        if let (Some(specified), Some(sink)) = (self.file_hash, source.hash.take()) {
            let (got, _) = sink.finish();
            if got != specified {
                return Err(SubstituteError::FileHashMismatch {
                    url: self.url.clone(),
                    specified: specified.to_typed(Encoding::Nix32),
                    got: got.to_typed(Encoding::Nix32),
                });
            }
            if let Some(specified) = self.file_size
                && source.size != specified
            {
                return Err(SubstituteError::FileSizeMismatch { url: self.url.clone(), specified, got: source.size });
            }
        }
        Ok(())
    }

    /// After a failure before the file was verified: the file's mismatch
    /// if it has one (the root cause), else `e`.
    fn diagnose(&mut self, e: SubstituteError) -> SubstituteError {
        if self.file_hash.is_none() && self.file_size.is_none() {
            return e;
        }
        if self.decoder.source_mut().error.is_some() || self.drain().is_err() {
            return e;
        }
        match self.check_file() {
            Err(mismatch) => mismatch,
            Ok(()) => e,
        }
    }
}

impl Read for NarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(io::Error::other(f.to_string()));
        }
        let remaining = self.nar_size - self.done;
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        match self.decoder.read(&mut buf[..want]) {
            Ok(0) => {
                let e = SubstituteError::Incomplete { path: self.path.clone(), cache: self.cache.clone() };
                let e = self.diagnose(e);
                Err(self.fail(e))
            }
            Ok(n) => {
                self.done += n as u64;
                (self.progress)(self.done, self.nar_size);
                if self.done == self.nar_size
                    && let Err(e) = self.verify()
                {
                    let e = self.diagnose(e);
                    return Err(self.fail(e));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let e = self.read_error(e);
                let e = self.diagnose(e);
                Err(self.fail(e))
            }
        }
    }
}
