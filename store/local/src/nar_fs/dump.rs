//! Serialising a file tree as a NAR, byte for byte as CppNix's `dumpPath`
//! (src/libutil/archive.cc): regular files with the executable flag taken
//! from the owner-x bit, directories with their entries sorted by name
//! bytes, symlinks with their target; any other file type is an error.
//!
//! Speed matters (every added path and build output is dumped to be hashed
//! and scanned), so the tree is walked with directory file descriptors and
//! `*at` calls, without recursion and without allocating per entry, and
//! all output, file contents included, is assembled in one large buffer
//! that file data is read straight into and that is handed to the sink when
//! full. Nothing is ever followed through a symlink below the root.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RawDir};
use rustix::io::Errno;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use store::hash::{Algorithm, Hash, HashSink};
use store::nar::{MAGIC, NarError, padding_len};

/// Size of the output buffer, and so of the chunks the sink receives.
const OUT_BUF_SIZE: usize = 1 << 20;
/// Buffer for `getdents64`; one call lists a few hundred entries.
const DIRENT_BUF_SIZE: usize = 32 << 10;

/// Flags for opening an entry that should be a regular file or a directory:
/// never through a symlink, and never blocking should it be a FIFO.
const OPEN_ENTRY: OFlags =
    OFlags::RDONLY.union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK).union(OFlags::NOCTTY).union(OFlags::CLOEXEC);

/// Writes the NAR serialisation of `path` (not following it if it is a
/// symlink) to `sink`, as `nix-store --dump` does. Returns the NAR's size.
pub fn dump<W: Write + ?Sized>(path: &Path, sink: &mut W) -> Result<u64, NarError> {
    dump_to(path, WriteChunks(sink))
}

/// Like [`dump`], but once the NAR outgrows one buffer, `sink` is written
/// from a second thread, so that reading the tree and consuming the NAR
/// (hashing it, say) overlap. Small NARs are written without a thread.
pub fn dump_parallel<W: Write + Send>(path: &Path, sink: &mut W) -> Result<u64, NarError> {
    std::thread::scope(|scope| dump_to(path, Pipeline { scope, state: PipelineState::Inline(sink) }))
}

/// The hash of the NAR serialisation of `path` and its size, as
/// `nix-hash --type <algorithm> PATH` computes it.
pub fn hash_path(path: &Path, algorithm: Algorithm) -> Result<(Hash, u64), NarError> {
    let mut sink = HashSink::new(algorithm);
    dump_parallel(path, &mut sink)?;
    Ok(sink.finish())
}

fn dump_to<C: Chunks>(path: &Path, chunks: C) -> Result<u64, NarError> {
    let mut dumper = Dumper {
        root: path,
        out: Out { chunks, buf: vec![0; OUT_BUF_SIZE].into_boxed_slice(), filled: 0, total: 0 },
        dirs: Vec::new(),
        frames: Vec::new(),
        dirent_buf: Vec::with_capacity(DIRENT_BUF_SIZE),
        link_buf: Vec::new(),
    };
    dumper.run()?;
    dumper.out.flush()?;
    dumper.out.chunks.finish()?;
    Ok(dumper.out.total)
}

struct Dumper<'a, C> {
    root: &'a Path,
    out: Out<C>,
    /// File descriptors of the directories being walked, root first.
    dirs: Vec<OwnedFd>,
    /// The sorted listing of each directory in `dirs`; kept beyond
    /// `dirs.len()` so that their buffers are reused.
    frames: Vec<Frame>,
    dirent_buf: Vec<u8>,
    link_buf: Vec<u8>,
}

/// The entries of one directory, sorted, and how far the walk got.
#[derive(Default)]
struct Frame {
    /// All names, back to back.
    names: Vec<u8>,
    entries: Vec<Entry>,
    /// Index of the next entry to write.
    next: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    end: usize,
    /// From `d_type`; `Unknown` when the file system does not say.
    kind: FileType,
}

impl Frame {
    fn name(&self, entry: Entry) -> &[u8] {
        &self.names[entry.start..entry.end]
    }
}

impl<C: Chunks> Dumper<'_, C> {
    fn run(&mut self) -> Result<(), NarError> {
        self.out.string(MAGIC)?;
        let root = self.root;
        let fail = |source: Errno| NarError::Dump { path: root.to_owned(), source: source.into() };
        let st = rfs::lstat(root).map_err(fail)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile | FileType::Directory => {
                let fd = rfs::open(root, OPEN_ENTRY, Mode::empty()).map_err(fail)?;
                self.opened(fd)?;
            }
            FileType::Symlink => {
                let target = rfs::readlink(root, std::mem::take(&mut self.link_buf)).map_err(fail)?;
                self.out.symlink(target.as_bytes())?;
                self.link_buf = target.into_bytes();
            }
            _ => return Err(NarError::UnsupportedFileType { path: root.to_owned() }),
        }
        while let Some(dir) = self.dirs.last() {
            let depth = self.dirs.len();
            let frame = &mut self.frames[depth - 1];
            let Some(&entry) = frame.entries.get(frame.next) else {
                self.out.tag(b")")?; // the directory
                self.dirs.pop();
                if !self.dirs.is_empty() {
                    self.out.tag(b")")?; // the entry holding it
                }
                continue;
            };
            frame.next += 1;
            let name = frame.name(entry);
            self.out.entry_header(name)?;
            let kind = match entry.kind {
                FileType::Unknown => match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(e) => return Err(self.fail_here(e)),
                },
                kind => kind,
            };
            match kind {
                FileType::RegularFile | FileType::Directory => {
                    let fd = match rfs::openat(dir, name, OPEN_ENTRY, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(e) => return Err(self.fail_here(e)),
                    };
                    self.opened(fd)?;
                }
                FileType::Symlink => {
                    let target = match rfs::readlinkat(dir, name, std::mem::take(&mut self.link_buf)) {
                        Ok(target) => target,
                        Err(e) => return Err(self.fail_here(e)),
                    };
                    self.out.symlink(target.as_bytes())?;
                    self.link_buf = target.into_bytes();
                }
                _ => {
                    return Err(NarError::UnsupportedFileType { path: self.current_path() });
                }
            }
            if self.dirs.len() == depth {
                self.out.tag(b")")?; // a file or symlink entry is complete
            }
        }
        Ok(())
    }

    /// Writes the node of an opened file or directory (its type checked on
    /// the descriptor, so a file swapped since it was listed is caught).
    fn opened(&mut self, fd: OwnedFd) -> Result<(), NarError> {
        let st = rfs::fstat(&fd).map_err(|e| self.fail_here(e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let executable = st.st_mode & 0o100 != 0;
                let size = st.st_size as u64;
                self.out.regular_header(executable, size)?;
                let mut file = std::fs::File::from(fd);
                match self.out.contents(&mut file, size) {
                    Ok(()) => Ok(()),
                    Err(ContentsError::Read(e)) => Err(NarError::Dump { path: self.current_path(), source: e }),
                    Err(ContentsError::Shrank) => Err(NarError::FileShrank { path: self.current_path() }),
                    Err(ContentsError::Nar(e)) => Err(e),
                }
            }
            FileType::Directory => {
                self.out.tag(b"(")?;
                self.out.tag(b"type")?;
                self.out.tag(b"directory")?;
                let depth = self.dirs.len();
                if self.frames.len() == depth {
                    self.frames.push(Frame::default());
                }
                if let Err(e) = list_dir(fd.as_fd(), &mut self.frames[depth], &mut self.dirent_buf) {
                    return Err(self.fail_here(e));
                }
                self.dirs.push(fd);
                Ok(())
            }
            _ => Err(NarError::UnsupportedFileType { path: self.current_path() }),
        }
    }

    /// The path of the entry being written: the root and the current entry
    /// name of each open directory.
    fn current_path(&self) -> PathBuf {
        let mut path = self.root.to_owned();
        for frame in &self.frames[..self.dirs.len()] {
            if let Some(&entry) = frame.next.checked_sub(1).and_then(|i| frame.entries.get(i)) {
                path.push(std::ffi::OsStr::from_bytes(frame.name(entry)));
            }
        }
        path
    }

    fn fail_here(&self, e: Errno) -> NarError {
        NarError::Dump { path: self.current_path(), source: e.into() }
    }
}

/// Reads the names in `dir` (without `.` and `..`) into `frame`, sorted by bytes.
fn list_dir(dir: BorrowedFd<'_>, frame: &mut Frame, buf: &mut Vec<u8>) -> Result<(), Errno> {
    frame.names.clear();
    frame.entries.clear();
    frame.next = 0;
    buf.clear();
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let mut iter = RawDir::new(dir, spare);
    while let Some(entry) = iter.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let start = frame.names.len();
        frame.names.extend_from_slice(name);
        frame.entries.push(Entry { start, end: frame.names.len(), kind: entry.file_type() });
    }
    let names = &frame.names;
    frame.entries.sort_unstable_by(|a, b| names[a.start..a.end].cmp(&names[b.start..b.end]));
    Ok(())
}

/// Why copying a file's contents failed.
enum ContentsError {
    Read(io::Error),
    Shrank,
    Nar(NarError),
}

/// Where the output buffer goes when it is full.
trait Chunks {
    /// Takes the first `len` bytes of `buf`; may swap `buf` for another
    /// buffer of the same size.
    fn take(&mut self, buf: &mut Box<[u8]>, len: usize) -> Result<(), NarError>;

    /// Called once after the last chunk.
    fn finish(&mut self) -> Result<(), NarError> {
        Ok(())
    }
}

/// Chunks written to a `Write` as they come.
struct WriteChunks<'a, W: ?Sized>(&'a mut W);

impl<W: Write + ?Sized> Chunks for WriteChunks<'_, W> {
    fn take(&mut self, buf: &mut Box<[u8]>, len: usize) -> Result<(), NarError> {
        self.0.write_all(&buf[..len]).map_err(NarError::Write)
    }
}

/// Buffers in flight between the dumping thread and the writing thread:
/// enough for each side to work on one while another waits.
const PIPELINE_BUFFERS: usize = 3;

/// Chunks handed to a writer thread, started when the first full buffer
/// comes; buffers travel back and forth instead of being copied.
struct Pipeline<'scope, 'env, W: Write + Send> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    state: PipelineState<'scope, 'env, W>,
}

enum PipelineState<'scope, 'env, W: Write + Send> {
    Inline(&'env mut W),
    Running {
        full: std::sync::mpsc::SyncSender<(Box<[u8]>, usize)>,
        empty: std::sync::mpsc::Receiver<Box<[u8]>>,
        buffers: usize,
        writer: std::thread::ScopedJoinHandle<'scope, io::Result<()>>,
    },
    Finished,
}

impl<W: Write + Send> Pipeline<'_, '_, W> {
    /// Hands the sink to a new writer thread.
    fn start(&mut self) {
        if let PipelineState::Inline(sink) = std::mem::replace(&mut self.state, PipelineState::Finished) {
            let (full, full_rx) = std::sync::mpsc::sync_channel::<(Box<[u8]>, usize)>(PIPELINE_BUFFERS);
            let (empty_tx, empty) = std::sync::mpsc::channel();
            let writer = self.scope.spawn(move || {
                for (buf, len) in full_rx {
                    sink.write_all(&buf[..len])?;
                    // The dumper may be gone already; the buffer is then dropped.
                    let _ = empty_tx.send(buf);
                }
                Ok(())
            });
            self.state = PipelineState::Running { full, empty, buffers: 1, writer };
        }
    }

    /// Stops the writer thread (once it has written what it was given) and
    /// returns its error, if any.
    fn stop(&mut self) -> Result<(), NarError> {
        match std::mem::replace(&mut self.state, PipelineState::Finished) {
            PipelineState::Running { full, writer, .. } => {
                drop(full);
                match writer.join() {
                    Ok(result) => result.map_err(NarError::Write),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            _ => Ok(()),
        }
    }
}

impl<W: Write + Send> Chunks for Pipeline<'_, '_, W> {
    fn take(&mut self, buf: &mut Box<[u8]>, len: usize) -> Result<(), NarError> {
        match self.state {
            // The last, partial chunk of a NAR that fit in one buffer.
            PipelineState::Inline(ref mut sink) if len < buf.len() => {
                return sink.write_all(&buf[..len]).map_err(NarError::Write);
            }
            PipelineState::Inline(_) => self.start(),
            _ => {}
        }
        let PipelineState::Running { full, empty, buffers, .. } = &mut self.state else {
            return Err(NarError::Write(io::Error::other("the NAR writer has already finished")));
        };
        let spare = match empty.try_recv() {
            Ok(spare) => Some(spare),
            Err(_) if *buffers < PIPELINE_BUFFERS => {
                *buffers += 1;
                Some(vec![0; buf.len()].into_boxed_slice())
            }
            Err(_) => empty.recv().ok(),
        };
        let sent = match spare {
            Some(spare) => full.send((std::mem::replace(buf, spare), len)).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // A closed channel means the writer stopped, and its error says why.
        Err(self.stop().err().unwrap_or_else(|| NarError::Write(io::Error::other("the NAR writer stopped early"))))
    }

    fn finish(&mut self) -> Result<(), NarError> {
        self.stop()
    }
}

/// The output buffer in front of the sink.
struct Out<C> {
    chunks: C,
    buf: Box<[u8]>,
    filled: usize,
    /// Bytes handed to the sink so far.
    total: u64,
}

impl<C: Chunks> Out<C> {
    fn flush(&mut self) -> Result<(), NarError> {
        if self.filled > 0 {
            self.chunks.take(&mut self.buf, self.filled)?;
            self.total += self.filled as u64;
            self.filled = 0;
        }
        Ok(())
    }

    fn bytes(&mut self, mut data: &[u8]) -> Result<(), NarError> {
        while !data.is_empty() {
            if self.filled == self.buf.len() {
                self.flush()?;
            }
            let n = data.len().min(self.buf.len() - self.filled);
            self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
        }
        Ok(())
    }

    fn u64(&mut self, n: u64) -> Result<(), NarError> {
        self.bytes(&n.to_le_bytes())
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        self.bytes(&[0; 8][..padding_len(len)])
    }

    fn string(&mut self, s: &[u8]) -> Result<(), NarError> {
        self.u64(s.len() as u64)?;
        self.bytes(s)?;
        self.padding(s.len() as u64)
    }

    fn tag(&mut self, tag: &[u8]) -> Result<(), NarError> {
        self.string(tag)
    }

    fn entry_header(&mut self, name: &[u8]) -> Result<(), NarError> {
        self.tag(b"entry")?;
        self.tag(b"(")?;
        self.tag(b"name")?;
        self.string(name)?;
        self.tag(b"node")
    }

    fn symlink(&mut self, target: &[u8]) -> Result<(), NarError> {
        self.tag(b"(")?;
        self.tag(b"type")?;
        self.tag(b"symlink")?;
        self.tag(b"target")?;
        self.string(target)?;
        self.tag(b")")
    }

    fn regular_header(&mut self, executable: bool, size: u64) -> Result<(), NarError> {
        self.tag(b"(")?;
        self.tag(b"type")?;
        self.tag(b"regular")?;
        if executable {
            self.tag(b"executable")?;
            self.tag(b"")?;
        }
        self.tag(b"contents")?;
        self.u64(size)
    }

    /// Reads exactly `size` bytes of `file` straight into the buffer, then
    /// the padding and the node's `)`. Bytes beyond `size` (a file that grew)
    /// are ignored, as CppNix does.
    fn contents(&mut self, file: &mut std::fs::File, size: u64) -> Result<(), ContentsError> {
        use std::io::Read;
        let mut left = size;
        while left > 0 {
            if self.filled == self.buf.len() {
                self.flush().map_err(ContentsError::Nar)?;
            }
            let room = (self.buf.len() - self.filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            match file.read(&mut self.buf[self.filled..self.filled + room]) {
                Ok(0) => return Err(ContentsError::Shrank),
                Ok(n) => {
                    self.filled += n;
                    left -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ContentsError::Read(e)),
            }
        }
        self.padding(size).map_err(ContentsError::Nar)?;
        self.tag(b")").map_err(ContentsError::Nar)
    }
}
