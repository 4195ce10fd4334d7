//! Looking inside a NAR without unpacking it, in one streaming pass: the
//! `.ls` JSON listings binary caches serve and `nix nar ls --json` prints
//! (CppNix's `listNar` in src/libstore/nar-accessor.cc), `nix nar ls`'s
//! view of one path, and `nix nar cat`.
//!
//! Paths inside a NAR are `/`-separated and relative to its root (`/` or the
//! empty string is the root); `.` components are ignored and `..` goes up,
//! as CppNix's `CanonPath` does. Symlinks are not followed.
//!
//! Every function reads the NAR to its end, so a NAR that is not valid
//! past the interesting part is still reported as broken, as CppNix (which
//! parses the whole NAR first) does. JSON keys and symlink targets that are
//! not UTF-8 are written with U+FFFD replacing the invalid bytes.

use super::{Event, Limits, NarError, NarReader};
use std::io::{self, BufRead, BufWriter, Write};

/// What a NAR records about one file system object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeInfo {
    Regular {
        executable: bool,
        size: u64,
        /// Offset of the contents in the NAR.
        nar_offset: u64,
    },
    Directory,
    Symlink {
        target: Vec<u8>,
    },
}

/// One entry of a directory inside a NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub node: NodeInfo,
}

/// A path inside a NAR: what it is and, for a directory, its entries in
/// NAR (byte) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathListing {
    pub node: NodeInfo,
    pub entries: Vec<DirEntry>,
}

/// Describes `path` inside the NAR and lists its entries if it is a
/// directory (`nix nar ls NAR PATH`).
pub fn list_path<R: BufRead>(nar: R, path: &str, limits: &Limits) -> Result<PathListing, NarError> {
    let want = components(path);
    let mut reader = NarReader::with_limits(nar, limits.clone());
    let mut tracker = Tracker::new(&want);
    let mut found: Option<PathListing> = None;
    let mut child_name = Vec::new();
    while let Some(event) = reader.next()? {
        match (tracker.classify(&event), event) {
            (Place::Target, event) if is_node(&event) => {
                found = Some(PathListing { node: node_info(&event), entries: Vec::new() });
            }
            (Place::Child, Event::Entry { name }) => child_name = name.to_vec(),
            (Place::Child, event) if is_node(&event) => {
                if let Some(listing) = found.as_mut() {
                    let name = std::mem::take(&mut child_name);
                    listing.entries.push(DirEntry { name, node: node_info(&event) });
                }
            }
            _ => {}
        }
    }
    found.ok_or_else(|| NarError::NotFound(display(&want)))
}

/// Copies the contents of the regular file at `path` inside the NAR to
/// `out` (`nix nar cat NAR PATH`); returns its size. The contents are
/// written as they are read, so a NAR that turns out to be broken after the
/// file fails with the contents already written.
pub fn cat<R: BufRead, W: Write + ?Sized>(nar: R, path: &str, out: &mut W, limits: &Limits) -> Result<u64, NarError> {
    let want = components(path);
    let mut reader = NarReader::with_limits(nar, limits.clone());
    let mut tracker = Tracker::new(&want);
    let mut copied = None;
    while let Some(event) = reader.next()? {
        match (tracker.classify(&event), event) {
            (Place::Target, Event::Regular { mut contents, .. }) => copied = Some(contents.copy_to(out)?),
            (Place::Target, Event::Symlink { .. } | Event::Directory) => {
                return Err(NarError::NotARegularFile(display(&want)));
            }
            _ => {}
        }
    }
    copied.ok_or_else(|| NarError::NotFound(display(&want)))
}

/// Writes a binary cache's `.ls` document for the NAR:
/// `{"version":1,"root":<listing of />}`.
pub fn write_ls_document<R: BufRead, W: Write + ?Sized>(nar: R, out: &mut W, limits: &Limits) -> Result<(), NarError> {
    let mut json = JsonOut::new(out);
    json.raw(b"{\"version\":1,\"root\":")?;
    write_listing(nar, &[], true, &mut json, limits)?;
    json.raw(b"}")?;
    json.finish()
}

/// Writes what `nix nar ls --json [-R] NAR PATH` prints: the object for
/// `path`, with a directory's entries listed in full when `recursive`, as
/// empty objects otherwise.
pub fn write_json_listing<R: BufRead, W: Write + ?Sized>(
    nar: R,
    path: &str,
    recursive: bool,
    out: &mut W,
    limits: &Limits,
) -> Result<(), NarError> {
    let want = components(path);
    let mut json = JsonOut::new(out);
    write_listing(nar, &want, recursive, &mut json, limits)?;
    json.finish()
}

fn write_listing<R: BufRead, W: Write + ?Sized>(
    nar: R,
    want: &[&[u8]],
    recursive: bool,
    json: &mut JsonOut<'_, W>,
    limits: &Limits,
) -> Result<(), NarError> {
    let mut reader = NarReader::with_limits(nar, limits.clone());
    let mut tracker = Tracker::new(want);
    let mut found = false;
    while let Some(event) = reader.next()? {
        let place = tracker.classify(&event);
        let full = match place {
            Place::Elsewhere => continue,
            Place::Target => {
                found = true;
                true
            }
            Place::Child => recursive,
            Place::Below if recursive => true,
            Place::Below => continue,
        };
        match event {
            // The target's own entry name is not part of its listing.
            Event::Entry { name } if place != Place::Target => json.key(name)?,
            Event::Entry { .. } => {}
            Event::DirectoryEnd if full => json.end_directory()?,
            Event::DirectoryEnd => {}
            event if full => json.node(&event)?,
            // CppNix lists a directory's entries as empty objects unless recursive.
            _ => json.raw(b"{}")?,
        }
    }
    if !found {
        return Err(NarError::NotFound(display(want)));
    }
    Ok(())
}

/// Where an event stands relative to the path looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Not at or under the path.
    Elsewhere,
    /// The node at the path (for a directory also its `DirectoryEnd`).
    Target,
    /// An entry of the target directory, or that entry's node (for a
    /// directory also its `DirectoryEnd`).
    Child,
    /// Deeper under the target.
    Below,
}

/// Follows the walk through a NAR to tell where each event is relative to
/// the wanted path.
struct Tracker<'a> {
    want: &'a [&'a [u8]],
    /// Directories open.
    depth: usize,
    /// How many leading components of `want` the current path matches.
    matched: usize,
    /// Length of the path of the node the next node event is about.
    node_len: usize,
}

impl<'a> Tracker<'a> {
    fn new(want: &'a [&'a [u8]]) -> Self {
        Tracker { want, depth: 0, matched: 0, node_len: 0 }
    }

    fn place(&self, len: usize) -> Place {
        let target = self.want.len();
        if self.matched < target || len < target {
            Place::Elsewhere
        } else if len == target {
            Place::Target
        } else if len == target + 1 {
            Place::Child
        } else {
            Place::Below
        }
    }

    fn classify<R>(&mut self, event: &Event<'_, R>) -> Place {
        match event {
            Event::Entry { name } => {
                // The entry's node has a path as long as the directories open;
                // it shares with the previous path all but its last component.
                let len = self.depth;
                self.matched = self.matched.min(len - 1);
                if self.matched == len - 1 && self.want.get(len - 1) == Some(name) {
                    self.matched = len;
                }
                self.node_len = len;
                self.place(len)
            }
            Event::Directory => {
                self.depth += 1;
                self.place(self.node_len)
            }
            Event::DirectoryEnd => {
                self.depth -= 1;
                self.matched = self.matched.min(self.depth);
                self.place(self.depth)
            }
            Event::Regular { .. } | Event::Symlink { .. } => self.place(self.node_len),
        }
    }
}

/// The components of a path inside a NAR, `.` dropped and `..` applied.
fn components(path: &str) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.as_bytes()),
        }
    }
    out
}

fn display(components: &[&[u8]]) -> String {
    if components.is_empty() {
        return "/".into();
    }
    components.iter().map(|c| format!("/{}", String::from_utf8_lossy(c))).collect()
}

fn is_node<R>(event: &Event<'_, R>) -> bool {
    matches!(event, Event::Regular { .. } | Event::Symlink { .. } | Event::Directory)
}

fn node_info<R>(event: &Event<'_, R>) -> NodeInfo {
    match event {
        Event::Regular { executable, size, offset, .. } => {
            NodeInfo::Regular { executable: *executable, size: *size, nar_offset: *offset }
        }
        Event::Symlink { target } => NodeInfo::Symlink { target: target.to_vec() },
        _ => NodeInfo::Directory,
    }
}

/// Streams JSON objects for NAR nodes, keeping track of commas.
struct JsonOut<'a, W: Write + ?Sized> {
    out: BufWriter<&'a mut W>,
    /// Whether an entry has been written yet in each open `entries` object.
    written: Vec<bool>,
}

impl<'a, W: Write + ?Sized> JsonOut<'a, W> {
    fn new(out: &'a mut W) -> Self {
        JsonOut { out: BufWriter::with_capacity(64 << 10, out), written: Vec::new() }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), NarError> {
        self.out.write_all(bytes).map_err(NarError::Write)
    }

    fn string(&mut self, s: &[u8]) -> Result<(), NarError> {
        let s = String::from_utf8_lossy(s);
        serde_json::to_writer(&mut self.out, &*s).map_err(|e| NarError::Write(io::Error::from(e)))
    }

    fn key(&mut self, name: &[u8]) -> Result<(), NarError> {
        let first = self.written.last_mut().is_none_or(|written| !std::mem::replace(written, true));
        if !first {
            self.raw(b",")?;
        }
        self.string(name)?;
        self.raw(b":")
    }

    /// Writes a node's object; a directory's stays open for its entries.
    /// Keys come in the order CppNix 2.8 writes them.
    fn node<R>(&mut self, event: &Event<'_, R>) -> Result<(), NarError> {
        match event {
            Event::Regular { executable, size, offset, .. } => {
                let exec = if *executable { ",\"executable\":true" } else { "" };
                let s = format!("{{\"type\":\"regular\",\"size\":{size}{exec},\"narOffset\":{offset}}}");
                self.raw(s.as_bytes())
            }
            Event::Symlink { target } => {
                self.raw(b"{\"type\":\"symlink\",\"target\":")?;
                self.string(target)?;
                self.raw(b"}")
            }
            Event::Directory => {
                self.written.push(false);
                self.raw(b"{\"type\":\"directory\",\"entries\":{")
            }
            Event::Entry { .. } | Event::DirectoryEnd => Ok(()),
        }
    }

    fn end_directory(&mut self) -> Result<(), NarError> {
        self.written.pop();
        self.raw(b"}}")
    }

    fn finish(mut self) -> Result<(), NarError> {
        self.out.flush().map_err(NarError::Write)
    }
}
