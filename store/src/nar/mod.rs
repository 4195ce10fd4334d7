//! Nix ARchives (NAR): the canonical serialisation of a file system object
//! that Nix hashes, signs and ships (CppNix src/libutil/archive.cc).
//!
//! A NAR is a sequence of strings, each a little-endian `u64` length, the
//! bytes, and zero padding to a multiple of 8:
//!
//! ```text
//! nar     = "nix-archive-1" node
//! node    = "(" "type" ( regular | symlink | directory ) ")"
//! regular = "regular" [ "executable" "" ] "contents" <contents>
//! symlink = "symlink" "target" <target>
//! directory = "directory" { "entry" "(" "name" <name> "node" node ")" }
//! ```
//!
//! Directory entries come in strictly increasing byte order of their names.
//!
//! What this module keeps:
//! - [`NarReader`] accepts only that canonical form (anything CppNix's
//!   `dumpPath` can produce, nothing else), consumes exactly the NAR's bytes
//!   from its `BufRead` and never more, and runs in memory and stack bounded by
//!   its [`Limits`] whatever the input. Every rejection names the byte offset
//!   and the reason.
//!
//! Dumping a file tree to a NAR and unpacking one onto disk read and write
//! the file system: they are `local_store::nar_fs`.
//!
//! Case-hacking (CppNix's macOS `use-case-hack`) is not implemented: names are
//! written and restored as they are.

mod bytes;
mod error;
mod listing;
mod reader;

pub use bytes::{dump_bytes, file_frame};
pub use error::NarError;
pub use listing::{DirEntry, NodeInfo, PathListing, cat, list_path, write_json_listing, write_ls_document};
pub use reader::{Contents, Event, NarReader};

/// The magic string every NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Bounds a [`NarReader`] enforces, so that a hostile NAR can neither exhaust
/// memory or the stack while being parsed, nor inodes and disk when unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most directories an object may be nested in (the root is at depth 0,
    /// its entries at depth 1). The reader keeps one entry name per level.
    pub max_depth: usize,
    /// Most file system objects (files, directories, symlinks, the root
    /// included) in one NAR.
    pub max_entries: u64,
    /// Most bytes of file contents, summed over all regular files.
    pub max_contents_size: u64,
    /// Longest entry name, in bytes (Linux's `NAME_MAX` is 255).
    pub max_name_len: usize,
    /// Longest symlink target, in bytes (Linux's `PATH_MAX` less its NUL).
    pub max_target_len: usize,
}

impl Limits {
    /// No object nested in more than 256 directories, at most 2^24
    /// (16,777,216) objects and 1 TiB of contents, names up to 255 bytes,
    /// symlink targets up to 4095 bytes.
    pub const DEFAULT: Limits = Limits {
        max_depth: 256,
        max_entries: 1 << 24,
        max_contents_size: 1 << 40,
        max_name_len: 255,
        max_target_len: 4095,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Zero bytes that follow a string of `len` bytes to align it to 8.
pub const fn padding_len(len: u64) -> usize {
    (len.wrapping_neg() % 8) as usize
}
