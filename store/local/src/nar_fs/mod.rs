//! NARs and the file system: dumping a tree as a NAR (CppNix's `dumpPath`),
//! hashing and scanning it for references on the way, and restoring a NAR
//! onto disk (`restorePath`). The NAR format itself (reading, listing, the
//! in-memory single-file NAR) is `store::nar`.

mod dump;
mod scan;
mod unpack;

pub use dump::{dump, dump_parallel, hash_path};
pub use scan::{ScanResult, scan_path};
pub use unpack::{UnpackStats, unpack};
