//! A pull parser for NARs: [`NarReader::next`] yields one [`Event`] at a
//! time from any `BufRead`, without recursion and with memory bounded by
//! [`Limits`]: one name per nesting level, one symlink target, nothing else.
//! File contents are never buffered; they are streamed through [`Contents`].
//!
//! The reader accepts only canonical NARs: the fields of a node in the order
//! `dumpPath` writes them, `contents` always present, names valid and sorted,
//! padding zero. It consumes the stream up to and including the NAR's final
//! `)` and nothing after it, so a NAR embedded in a protocol stream can be
//! followed by other data.

use super::error::show;
use super::{Limits, MAGIC, NarError, padding_len};
use std::io::{self, BufRead, Read};

/// Longest tag (`nix-archive-1`, `directory`, ...) is 13 bytes; anything
/// longer where a tag is expected is not worth reading in full.
const MAX_TAG_LEN: usize = 16;

/// One step through a NAR.
///
/// The root yields one node event. A directory yields [`Event::Directory`],
/// then per entry an [`Event::Entry`] followed by that entry's node events,
/// then [`Event::DirectoryEnd`].
pub enum Event<'a, R> {
    /// A regular file. Its contents may be read through `contents`; whatever
    /// is left unread is skipped by the next call to [`NarReader::next`].
    Regular {
        executable: bool,
        size: u64,
        /// Where the contents start in the NAR (what `.ls` files call `narOffset`).
        offset: u64,
        contents: Contents<'a, R>,
    },
    Symlink {
        target: &'a [u8],
    },
    /// The start of a directory.
    Directory,
    /// An entry of the current directory; the next event is its node.
    Entry {
        name: &'a [u8],
    },
    /// The end of the current directory.
    DirectoryEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    Start,
    /// Before a node's `(`.
    Node,
    /// Inside a regular file's contents.
    Contents { size: u64 },
    /// A node was read up to its `)`; the entry holding it (if any) is still open.
    AfterNode,
    /// Inside a directory, before `entry` or `)`.
    InDirectory,
    /// The root node is complete.
    Done,
    /// An error was returned; the stream position is unknown.
    Failed,
}

/// What the parser has read an event's worth of; turned into an [`Event`]
/// borrowing the reader once no error can happen any more.
enum Ready {
    Regular { executable: bool, size: u64, offset: u64 },
    Symlink,
    Directory,
    Entry { start: usize },
    DirectoryEnd,
}

/// Parses one NAR from a `BufRead`. Drive it with [`next`](Self::next) until
/// it returns `None`; only then has the whole NAR been consumed and checked.
pub struct NarReader<R> {
    inner: R,
    limits: Limits,
    state: State,
    /// Bytes consumed so far.
    pos: u64,
    /// Unread contents bytes of the current regular file.
    remaining: u64,
    /// The names of the entries leading to the current node, concatenated;
    /// `frames[i]` is where the name of the entry at depth `i + 1` starts.
    /// For each open directory this also holds its last entry's name, which
    /// the next entry's name must sort after.
    path: Vec<u8>,
    frames: Vec<usize>,
    /// Entry name being read, or a symlink target.
    text: Vec<u8>,
    entries: u64,
    contents_total: u64,
}

impl<R: BufRead> NarReader<R> {
    /// A reader with the default [`Limits`].
    pub fn new(inner: R) -> Self {
        Self::with_limits(inner, Limits::default())
    }

    pub fn with_limits(inner: R, limits: Limits) -> Self {
        NarReader {
            inner,
            limits,
            state: State::Start,
            pos: 0,
            remaining: 0,
            path: Vec::new(),
            frames: Vec::new(),
            text: Vec::new(),
            entries: 0,
            contents_total: 0,
        }
    }

    /// Bytes of the NAR consumed so far; its size once `next` returned `None`.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Number of directories open: for `Directory` including the one just
    /// started, for `DirectoryEnd` without the one just ended.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The names leading from the root to the node the last event is about:
    /// the entry's node for `Entry`, the directory for `Directory` and
    /// `DirectoryEnd`, the file or symlink otherwise (nothing for the root).
    pub fn path_components(&self) -> impl Iterator<Item = &[u8]> {
        let ends = self.frames.iter().skip(1).copied().chain([self.path.len()]);
        // A directory with no entry yet has an empty last component.
        self.frames.iter().zip(ends).map(|(&start, end)| &self.path[start..end]).filter(|name| !name.is_empty())
    }

    /// Whether the whole NAR has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The underlying reader, positioned just after the NAR if it was read
    /// to the end.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next event, or `None` once the NAR's final `)` has been read.
    /// After an error, every call fails.
    // Not an `Iterator`: events borrow from the reader.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Event<'_, R>>, NarError> {
        let ready = match self.step() {
            Ok(Some(ready)) => ready,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        Ok(Some(match ready {
            Ready::Regular { executable, size, offset } => {
                Event::Regular { executable, size, offset, contents: Contents { reader: self } }
            }
            Ready::Symlink => Event::Symlink { target: &self.text },
            Ready::Directory => Event::Directory,
            Ready::Entry { start } => Event::Entry { name: &self.path[start..] },
            Ready::DirectoryEnd => Event::DirectoryEnd,
        }))
    }

    /// Parses up to the next event.
    fn step(&mut self) -> Result<Option<Ready>, NarError> {
        loop {
            match self.state {
                State::Start => {
                    self.read_magic()?;
                    self.state = State::Node;
                }
                State::Node => return self.read_node().map(Some),
                State::Contents { size } => {
                    self.skip_contents()?;
                    self.read_padding(size, "padding after file contents")?;
                    self.expect_tag(b")", "`)` after file contents")?;
                    self.state = State::AfterNode;
                }
                State::AfterNode => {
                    if self.frames.is_empty() {
                        self.state = State::Done;
                    } else {
                        self.expect_tag(b")", "`)` closing a directory entry")?;
                        self.state = State::InDirectory;
                    }
                }
                State::InDirectory => return self.read_entry().map(Some),
                State::Done => return Ok(None),
                State::Failed => return Err(NarError::UsedAfterError { offset: self.pos }),
            }
        }
    }

    /// Reads the rest of the NAR, discarding it.
    pub fn skip_to_end(&mut self) -> Result<(), NarError> {
        while self.next()?.is_some() {}
        Ok(())
    }

    fn read_magic(&mut self) -> Result<(), NarError> {
        // CppNix reports any failure to read the magic string as "not a NAR".
        let magic = match self.read_tag("the magic string") {
            Ok((_, tag)) => tag,
            Err(NarError::Read { offset, source }) => return Err(NarError::Read { offset, source }),
            Err(_) => return Err(NarError::BadMagic),
        };
        if magic.as_slice() != MAGIC {
            return Err(NarError::BadMagic);
        }
        Ok(())
    }

    /// Reads a node up to its first event: `(`, `type`, the type, and for a
    /// regular file its header, for a symlink everything up to `)`.
    fn read_node(&mut self) -> Result<Ready, NarError> {
        let node_offset = self.pos;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(NarError::TooManyEntries { offset: node_offset, max: self.limits.max_entries });
        }
        self.expect_tag(b"(", "`(` opening a node")?;
        self.expect_tag(b"type", "`type`")?;
        let (offset, kind) = self.read_tag("a file type")?;
        match kind.as_slice() {
            b"regular" => {
                let (offset, mut tag) = self.read_tag("`executable` or `contents`")?;
                let executable = tag.as_slice() == b"executable";
                if executable {
                    self.expect_tag(b"", "the empty string after `executable`")?;
                    (_, tag) = self.read_tag("`contents`")?;
                }
                if tag.as_slice() != b"contents" {
                    let expected = if executable { "`contents`" } else { "`executable` or `contents`" };
                    return Err(unexpected(offset, expected, &tag));
                }
                let size_offset = self.pos;
                let size = self.read_u64("a file size")?;
                let max = self.limits.max_contents_size;
                self.contents_total = match self.contents_total.checked_add(size) {
                    Some(total) if total <= max => total,
                    _ => {
                        return Err(NarError::ContentsTooLarge { offset: size_offset, max });
                    }
                };
                self.remaining = size;
                self.state = State::Contents { size };
                Ok(Ready::Regular { executable, size, offset: self.pos })
            }
            b"symlink" => {
                self.expect_tag(b"target", "`target`")?;
                let target_offset = self.pos;
                let max = self.limits.max_target_len;
                self.read_text(max, "symlink target")?;
                if self.text.is_empty() {
                    return Err(NarError::EmptySymlinkTarget { offset: target_offset });
                }
                if self.text.contains(&0) {
                    return Err(NarError::SymlinkTargetWithNul { offset: target_offset, target: show(&self.text) });
                }
                self.expect_tag(b")", "`)` after a symlink target")?;
                self.state = State::AfterNode;
                Ok(Ready::Symlink)
            }
            b"directory" => {
                self.frames.push(self.path.len());
                self.state = State::InDirectory;
                Ok(Ready::Directory)
            }
            _ => Err(NarError::UnknownFileType { offset, got: show(kind.as_slice()) }),
        }
    }

    /// Inside a directory: reads `)` ending it, or an entry up to its `node`.
    fn read_entry(&mut self) -> Result<Ready, NarError> {
        let (offset, tag) = self.read_tag("`entry` or `)`")?;
        match tag.as_slice() {
            b")" => {
                let start = self.frames.pop().unwrap_or_default();
                self.path.truncate(start);
                self.state = State::AfterNode;
                Ok(Ready::DirectoryEnd)
            }
            b"entry" => {
                if self.frames.len() > self.limits.max_depth {
                    return Err(NarError::TooDeep { offset, max: self.limits.max_depth });
                }
                self.expect_tag(b"(", "`(` opening a directory entry")?;
                self.expect_tag(b"name", "`name`")?;
                let name_offset = self.pos;
                self.read_text(self.limits.max_name_len, "entry name")?;
                self.check_name(name_offset)?;
                self.expect_tag(b"node", "`node`")?;
                let start = self.frames.last().copied().unwrap_or_default();
                self.path.truncate(start);
                self.path.extend_from_slice(&self.text);
                self.state = State::Node;
                Ok(Ready::Entry { start })
            }
            _ => Err(unexpected(offset, "`entry` or `)`", &tag)),
        }
    }

    /// Checks the name just read into `text`, and that it sorts after the
    /// directory's previous entry (still in `path`).
    fn check_name(&self, offset: u64) -> Result<(), NarError> {
        let name = self.text.as_slice();
        match name {
            [] => return Err(NarError::EmptyName { offset }),
            b"." | b".." => {
                return Err(NarError::DotName { offset, name: show(name) });
            }
            _ if name.contains(&b'/') => {
                return Err(NarError::NameWithSlash { offset, name: show(name) });
            }
            _ if name.contains(&0) => {
                return Err(NarError::NameWithNul { offset, name: show(name) });
            }
            _ => {}
        }
        let start = self.frames.last().copied().unwrap_or_default();
        let previous = &self.path[start..];
        // An open directory with no entry yet has an empty previous name,
        // which every (non-empty) name sorts after.
        match name.cmp(previous) {
            std::cmp::Ordering::Greater => Ok(()),
            std::cmp::Ordering::Equal => Err(NarError::DuplicateEntry { offset, name: show(name) }),
            std::cmp::Ordering::Less => {
                Err(NarError::EntriesOutOfOrder { offset, name: show(name), previous: show(previous) })
            }
        }
    }

    fn skip_contents(&mut self) -> Result<(), NarError> {
        while self.remaining > 0 {
            let n = self.contents_chunk()?.len();
            self.consume_contents(n);
        }
        Ok(())
    }

    /// Buffered bytes of the current file's contents (empty at its end).
    fn contents_chunk(&mut self) -> Result<&[u8], NarError> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let remaining = self.remaining;
        let failure = match fill_buf(&mut self.inner, self.pos) {
            Ok([]) => NarError::Truncated { offset: self.pos, what: "file contents" },
            Ok(buf) => {
                let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                return Ok(&buf[..n]);
            }
            Err(e) => e,
        };
        self.state = State::Failed;
        Err(failure)
    }

    fn consume_contents(&mut self, n: usize) {
        let n = n.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.inner.consume(n);
        self.pos += n as u64;
        self.remaining -= n as u64;
    }

    /// Fills `out` from the stream.
    fn read_exact(&mut self, out: &mut [u8], what: &'static str) -> Result<(), NarError> {
        let mut done = 0;
        while done < out.len() {
            let buf = fill_buf(&mut self.inner, self.pos)?;
            if buf.is_empty() {
                return Err(NarError::Truncated { offset: self.pos, what });
            }
            let n = buf.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.pos += n as u64;
            done += n;
        }
        Ok(())
    }

    fn read_u64(&mut self, what: &'static str) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_padding(&mut self, len: u64, what: &'static str) -> Result<(), NarError> {
        let offset = self.pos;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding_len(len)];
        self.read_exact(pad, what)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(NarError::NonZeroPadding { offset });
        }
        Ok(())
    }

    /// Reads a string that must be a tag; returns where it started and its
    /// bytes. Strings too long to be any tag are refused unread.
    fn read_tag(&mut self, expected: &'static str) -> Result<(u64, Tag), NarError> {
        let offset = self.pos;
        let len = self.read_u64(expected)?;
        if len > MAX_TAG_LEN as u64 {
            return Err(NarError::StringTooLong { offset, what: "tag", len, max: MAX_TAG_LEN as u64 });
        }
        let mut tag = Tag { bytes: [0; MAX_TAG_LEN], len: len as usize };
        self.read_exact(&mut tag.bytes[..tag.len], expected)?;
        self.read_padding(len, expected)?;
        Ok((offset, tag))
    }

    fn expect_tag(&mut self, want: &[u8], expected: &'static str) -> Result<(), NarError> {
        let (offset, tag) = self.read_tag(expected)?;
        if tag.as_slice() != want {
            return Err(unexpected(offset, expected, &tag));
        }
        Ok(())
    }

    /// Reads a name or symlink target of at most `max` bytes into `text`;
    /// the length is checked before anything is allocated.
    fn read_text(&mut self, max: usize, what: &'static str) -> Result<(), NarError> {
        let offset = self.pos;
        let len = self.read_u64(what)?;
        if len > max as u64 {
            return Err(NarError::StringTooLong { offset, what, len, max: max as u64 });
        }
        let mut text = std::mem::take(&mut self.text);
        text.resize(len as usize, 0);
        let read = self.read_exact(&mut text, what);
        self.text = text;
        read?;
        self.read_padding(len, what)
    }
}

/// A short string read where a tag was expected.
struct Tag {
    bytes: [u8; MAX_TAG_LEN],
    len: usize,
}

impl Tag {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn unexpected(offset: u64, expected: &'static str, got: &Tag) -> NarError {
    NarError::UnexpectedToken { offset, expected, got: format!("`{}`", show(got.as_slice())) }
}

fn fill_buf<R: BufRead>(inner: &mut R, offset: u64) -> Result<&[u8], NarError> {
    // Retrying on EINTR needs the borrow to end before looping; ask once
    // more outside the loop to hand out the buffer.
    loop {
        match inner.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(NarError::Read { offset, source }),
        }
    }
    inner.fill_buf().map_err(|source| NarError::Read { offset, source })
}

/// The contents of the regular file of the last [`Event::Regular`], read
/// straight from the underlying buffer.
pub struct Contents<'a, R> {
    reader: &'a mut NarReader<R>,
}

impl<R: BufRead> Contents<'_, R> {
    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        self.reader.remaining
    }

    /// The next buffered bytes of the contents, without consuming them; empty
    /// once all were consumed. Fails if the stream ends early.
    pub fn chunk(&mut self) -> Result<&[u8], NarError> {
        self.reader.contents_chunk()
    }

    /// Marks `n` bytes returned by [`chunk`](Self::chunk) as read.
    pub fn consume(&mut self, n: usize) {
        self.reader.consume_contents(n);
    }

    /// Copies the rest of the contents to `out`; returns the byte count.
    /// Write errors come back as [`NarError::Write`].
    pub fn copy_to(&mut self, out: &mut (impl io::Write + ?Sized)) -> Result<u64, NarError> {
        let mut total = 0;
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(total);
            }
            out.write_all(chunk).map_err(NarError::Write)?;
            let n = chunk.len();
            self.consume(n);
            total += n as u64;
        }
    }
}

/// Read errors carry the [`NarError`] inside an `io::Error`.
impl<R: BufRead> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Contents<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.contents_chunk().map_err(|e| match e {
            NarError::Read { source, .. } => source,
            e @ NarError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            e => io::Error::other(e),
        })
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume_contents(n);
    }
}
