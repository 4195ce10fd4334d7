//! Why reading, writing, unpacking or looking inside a NAR failed. Offsets
//! are byte offsets from the start of the NAR; paths inside a NAR are shown
//! as `/a/b`.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with a NAR. Parse errors name the byte
/// offset where the offending item starts; file system errors name the path.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    // --- reading a NAR ---
    #[error("cannot read the NAR at offset {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("NAR ends at offset {offset} in the middle of {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("input doesn't look like a Nix archive: it does not start with `nix-archive-1`")]
    BadMagic,
    #[error("NAR has {got} at offset {offset} where {expected} was expected")]
    UnexpectedToken { offset: u64, expected: &'static str, got: String },
    #[error("NAR has unknown file type `{got}` at offset {offset}")]
    UnknownFileType { offset: u64, got: String },
    #[error("NAR {what} at offset {offset} is {len} bytes long, more than the {max} allowed")]
    StringTooLong { offset: u64, what: &'static str, len: u64, max: u64 },
    #[error("NAR has non-zero padding at offset {offset}")]
    NonZeroPadding { offset: u64 },
    #[error("NAR entry name at offset {offset} is empty")]
    EmptyName { offset: u64 },
    #[error("NAR entry name `{name}` at offset {offset} is not allowed")]
    DotName { offset: u64, name: String },
    #[error("NAR entry name `{name}` at offset {offset} contains `/`")]
    NameWithSlash { offset: u64, name: String },
    #[error("NAR entry name `{name}` at offset {offset} contains a NUL byte")]
    NameWithNul { offset: u64, name: String },
    #[error("NAR entry `{name}` at offset {offset} is not sorted: it comes after `{previous}`")]
    EntriesOutOfOrder { offset: u64, name: String, previous: String },
    #[error("NAR entry `{name}` at offset {offset} appears twice in its directory")]
    DuplicateEntry { offset: u64, name: String },
    #[error("NAR symlink at offset {offset} has an empty target")]
    EmptySymlinkTarget { offset: u64 },
    #[error("NAR symlink target `{target}` at offset {offset} contains a NUL byte")]
    SymlinkTargetWithNul { offset: u64, target: String },
    #[error("NAR entry at offset {offset} is nested in more than {max} directories")]
    TooDeep { offset: u64, max: usize },
    #[error("NAR has more than {max} files, directories and symlinks (the one at offset {offset} is one too many)")]
    TooManyEntries { offset: u64, max: u64 },
    #[error("NAR file contents exceed {max} bytes in total (at offset {offset})")]
    ContentsTooLarge { offset: u64, max: u64 },
    #[error("NAR reader used again after it failed at offset {offset}")]
    UsedAfterError { offset: u64 },

    // --- writing a NAR from a file tree ---
    #[error("cannot read '{path}': {source}")]
    Dump {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file '{path}' has an unsupported type")]
    UnsupportedFileType { path: PathBuf },
    #[error("file '{path}' shrank while it was being archived")]
    FileShrank { path: PathBuf },
    #[error("cannot write the NAR: {0}")]
    Write(#[source] io::Error),

    // --- unpacking ---
    #[error("cannot unpack a NAR into '{0}': it already exists")]
    TargetExists(PathBuf),
    #[error("cannot unpack a NAR into '{0}': it has no parent directory and file name")]
    BadTarget(PathBuf),
    #[error("cannot create '{path}': {source}")]
    Unpack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // --- looking inside a NAR ---
    #[error("path '{0}' does not exist in the NAR")]
    NotFound(String),
    #[error("path '{0}' in the NAR is not a regular file")]
    NotARegularFile(String),
}

/// Shows bytes from a NAR (a name, a target, a tag) for a message: as text
/// when they are UTF-8, with control characters escaped, else byte by byte.
pub(crate) fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}
