//! What the witness adds to a fixed-output build: a proxy listener of its
//! own (records name the derivation), the proxy variables pointing at it,
//! and the CA bundle that trusts the witness CA (first) mounted where
//! CppNix mounts `ssl-cert-file` in fixed-output sandboxes, with the
//! variables nixpkgs' fetchers read it from pointing at it.
//!
//! The variables are set whether or not the derivation lists them in
//! `impureEnvVars`, and override what the derivation sets (nixpkgs'
//! fetchurl points `SSL_CERT_FILE` at a missing file when the hash is
//! known, so that curl skips verification: with the bundle there, it
//! verifies against the witness CA instead).
//!
//! The witness also keeps what a fixed-output build made, and makes it
//! again without the builder (substitutor mode, output level):
//!
//! - [`keep`]: once a fixed-output build's output is registered, its
//!   bytes (flat) or its NAR (recursive) go to the witness CAS, checked
//!   against the declared hash (with sha256 the object's name is that
//!   hash) and indexed by it ([`Archive::put_output`]); `text` outputs are
//!   not kept. A failure is a warning in the daemon's log: the build has
//!   succeeded whatever happens here.
//! - [`import`]: when a fixed-output derivation's output is missing, before
//!   its inputs are realised or substitutes asked for (the derivation goal
//!   calls it), the witness's object for the declared hash
//!   ([`Archive::output_for`]) is added to the store as the
//!   content-addressed path it is (the store checks the NAR hash and the
//!   content address, and takes the output's lock); the builder does not
//!   run. The object is read through the CAS's verifying reader: a
//!   tampered object is refused, named in a warning to the client and in
//!   the log, and the build goes on as usual.

use super::error::BuildError;
use super::executor::Isolation;
use super::goal::{Event, GoalCtx, Outcome};
use crate::witness::{BUNDLE_IN_SANDBOX, BuildListener, WitnessService, build_ref};
use local_store::{AddOptions, LocalStore};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use store::content_address::{ContentAddress, ContentAddressMethod, FileIngestionMethod};
use store::derivation::{Derivation, Output};
use store::hash::{Algorithm, HashSink};
use store::path_info::PathInfo;
use store::store_path::StorePath;
use witness_proxy::archive::{Archive, ArchiveError, OutputMode};
use witness_proxy::cas::{CasError, ObjectId};
use worker_protocol::{BuildStatus, Verbosity};

/// Proxy variables (curl reads only the lower-case `http_proxy`; Maven
/// only upper case): every scheme goes to the witness, none bypasses it.
const PROXY_VARS: [&str; 8] =
    ["http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// Where nixpkgs' fetchers, OpenSSL, curl and git look for the CA bundle.
const CA_VARS: [&str; 4] = ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE", "NIX_GIT_SSL_CAINFO", "GIT_SSL_CAINFO"];

/// A fixed-output build's witness, alive while the builder runs.
pub struct WitnessedFetch {
    listener: BuildListener,
    bundle: PathBuf,
}

/// The witness for `drv` when it is fixed-output and the daemon has one.
pub fn begin(
    witness: Option<&WitnessService>,
    full: &str,
    drv: &Derivation,
) -> Result<Option<WitnessedFetch>, BuildError> {
    let (Some(witness), Some(build)) = (witness, build_ref(full, drv)) else { return Ok(None) };
    let listener = witness
        .listen_for(build)
        .map_err(|e| BuildError::Other(format!("opening the witness proxy's listener for '{full}': {e}")))?;
    Ok(Some(WitnessedFetch { listener, bundle: witness.bundle().to_owned() }))
}

impl WitnessedFetch {
    /// Sets the variables in the builder's `env` and mounts the bundle
    /// (inside a sandbox; without one the builder reads it on the host).
    pub fn apply(&self, env: &mut Vec<(Vec<u8>, Vec<u8>)>, sandbox_paths: &mut BTreeSet<String>, isolation: Isolation) {
        let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k.as_bytes()) {
            Some((_, value)) => *value = v.as_bytes().to_vec(),
            None => env.push((k.as_bytes().to_vec(), v.as_bytes().to_vec())),
        };
        for k in PROXY_VARS {
            set(k, &self.listener.url);
        }
        for k in NO_PROXY_VARS {
            set(k, "");
        }
        let bundle = match isolation {
            Isolation::Namespaces => {
                sandbox_paths.insert(format!("{BUNDLE_IN_SANDBOX}={}", self.bundle.display()));
                BUNDLE_IN_SANDBOX.to_owned()
            }
            Isolation::None => self.bundle.display().to_string(),
        };
        for k in CA_VARS {
            set(k, &bundle);
        }
    }
}

/// Why an output could not be kept in, or copied from, the witness.
#[derive(Debug, thiserror::Error)]
enum OutputError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Cas(#[from] CasError),
    #[error(transparent)]
    Store(#[from] local_store::Error),
    /// Reading the object failed; the CAS's own message (it names the
    /// object: `object … is tampered: its bytes hash to …`) when it has one.
    #[error("{0}")]
    Object(String),
    #[error("object {0} is no longer in the witness CAS")]
    Gone(ObjectId),
    #[error("cannot read the output '{path}': {message}")]
    Output { path: String, message: String },
}

/// The one output of a fixed-output derivation, its content address and
/// how the witness keeps it; `None` for other derivations and for `text`
/// (and git) hashing.
fn fixed_output(drv: &Derivation) -> Option<(&str, &ContentAddress, OutputMode)> {
    if drv.outputs.len() != 1 {
        return None;
    }
    let (name, Output::Fixed(ca)) = drv.outputs.iter().next()? else { return None };
    let mode = match ca.method {
        ContentAddressMethod::Fixed(FileIngestionMethod::Flat) => OutputMode::Flat,
        ContentAddressMethod::Fixed(FileIngestionMethod::Recursive) => OutputMode::Recursive,
        ContentAddressMethod::Text | ContentAddressMethod::Fixed(FileIngestionMethod::Git) => return None,
    };
    Some((name, ca, mode))
}

/// Whether the witness can hold `drv`'s output: a fixed-output derivation
/// hashed flat or recursive, with a daemon that has a witness.
pub fn may_hold(witness: Option<&WitnessService>, drv: &Derivation) -> bool {
    witness.is_some() && fixed_output(drv).is_some()
}

/// Keeps the output of a fixed-output build that just succeeded in the
/// witness CAS, findable by its declared hash. Never fails the build: a
/// failure is logged.
pub fn keep(
    witness: Option<&WitnessService>,
    store: &LocalStore,
    drv: &Derivation,
    outputs: &BTreeMap<String, StorePath>,
) {
    let (Some(witness), Some((name, ca, mode))) = (witness, fixed_output(drv)) else { return };
    let Some(path) = outputs.get(name) else { return };
    let full = store.display(path);
    match keep_output(witness.archive(), store, path, ca, mode) {
        Ok(id) => tracing::info!("kept '{full}' in the witness archive as object {id}"),
        Err(e) => tracing::warn!("cannot keep '{full}' in the witness archive: {e}"),
    }
}

fn keep_output(
    archive: &Archive,
    store: &LocalStore,
    path: &StorePath,
    ca: &ContentAddress,
    mode: OutputMode,
) -> Result<ObjectId, OutputError> {
    let real = store.real_path(path);
    let output_error = |message: String| OutputError::Output { path: store.display(path), message };
    match mode {
        OutputMode::Flat => {
            let mut file = std::fs::File::open(&real).map_err(|e| output_error(e.to_string()))?;
            Ok(archive.put_output(&ca.hash, mode, &mut file)?)
        }
        OutputMode::Recursive => {
            // The NAR is dumped on a thread of its own into a pipe the
            // archive reads (the dumper writes, the archive pulls).
            let (reader, writer) = io::pipe().map_err(|e| output_error(format!("creating a pipe: {e}")))?;
            let dumper = std::thread::spawn(move || {
                let mut writer = writer;
                local_store::nar_fs::dump(&real, &mut writer)
            });
            let mut reader = reader;
            let kept = archive.put_output(&ca.hash, mode, &mut reader);
            // A failed put stops reading: the dumper then fails on the
            // closed pipe and ends. A failed dump ends the NAR short, and
            // the put fails on the declared hash.
            drop(reader);
            let dumped = dumper.join().map_err(|_| output_error("the NAR dumper panicked".into()))?;
            match (kept, dumped) {
                (Ok(id), Ok(_)) => Ok(id),
                (Err(kept), Ok(_)) => Err(kept.into()),
                (Ok(_), Err(dumped)) => Err(output_error(dumped.to_string())),
                (Err(kept), Err(dumped)) => Err(output_error(format!("{dumped} ({kept})"))),
            }
        }
    }
}

/// Makes the missing output of a fixed-output derivation valid from the
/// witness archive, without its builder, when the witness holds it: the
/// outcome then. `None` when there is nothing to copy, or the copy failed
/// (warned about): the build goes on as usual. Blocking.
///
/// The outcome is `Built`, as after a build: CppNix's build results have
/// no status for an output made from a witness (`Substituted` would tell
/// the client that a substituter had it).
///
/// Not to be called under the output's lock: the store's add takes it
/// itself (flock: a second lock on it by the same process would wait for
/// ever) and checks validity again under it.
pub fn import(
    witness: Option<&WitnessService>,
    store: &LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
    initial: &BTreeMap<String, Option<StorePath>>,
    ctx: &GoalCtx,
) -> Option<Outcome> {
    let (witness, (name, ca, mode)) = (witness?, fixed_output(drv)?);
    let path = initial.get(name)?.as_ref()?;
    let full = store.display(path);
    let archive = witness.archive();
    let id = match archive.output_for(&ca.hash, mode) {
        Ok(id) => id?,
        Err(e) => {
            tracing::warn!("looking '{full}' up in the witness archive: {e}");
            return None;
        }
    };
    ctx.emit(Event::Message(Verbosity::Info, format!("copying '{full}' from the witness archive")));
    let start_time = unix_now();
    if let Err(e) = copy_output(archive, store, drv_path, path, ca, mode, id) {
        let message = format!("cannot copy '{full}' from the witness archive: {e}; building it instead");
        tracing::warn!("{message}");
        ctx.emit(Event::Warning(message));
        return None;
    }
    tracing::info!("copied '{full}' from the witness archive (object {id}); its builder did not run");
    let mut o = Outcome::new(BuildStatus::Built);
    o.outputs.insert(name.to_owned(), path.clone());
    o.start_time = start_time;
    o.stop_time = unix_now();
    Some(o)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Adds object `id` as the output `path` (the file of a flat output, the
/// NAR of a recursive one), with the derivation's content address and no
/// references.
fn copy_output(
    archive: &Archive,
    store: &LocalStore,
    drv_path: &StorePath,
    path: &StorePath,
    ca: &ContentAddress,
    mode: OutputMode,
    id: ObjectId,
) -> Result<(), OutputError> {
    let cas = archive.cas();
    let size = cas.size(&id)?.ok_or(OutputError::Gone(id))?;
    let open = || -> Result<Box<dyn Read + Send>, OutputError> { cas.get(&id)?.ok_or(OutputError::Gone(id)) };
    let (nar_hash, nar_size, stream): (_, _, Box<dyn Read + Send>) = match mode {
        // The object is the NAR: its name is the NAR hash.
        OutputMode::Recursive => (id.to_hash(), size, open()?),
        // The NAR of the file, hashed in a first pass (which reads the
        // object to its end, and so checks it), then streamed.
        OutputMode::Flat => {
            let (head, tail) = store::nar::file_frame(size, false);
            let mut sink = HashSink::new(Algorithm::Sha256);
            sink.update(&head);
            io::copy(&mut open()?, &mut sink).map_err(|e| read_error(&id, e))?;
            sink.update(&tail);
            let (nar_hash, nar_size) = sink.finish();
            let stream = io::Cursor::new(head).chain(open()?).chain(io::Cursor::new(tail));
            (nar_hash, nar_size, Box::new(stream))
        }
    };
    let mut info = PathInfo::new(path.clone(), nar_hash, nar_size);
    info.ca = Some(*ca);
    info.deriver = Some(drv_path.clone());
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let added = store.add_nar(&info, &mut reader, AddOptions::default());
    // The object is checked at its end of stream, which the NAR reader
    // stops short of when the bytes are not the NAR they should be: read
    // on to there, so that a tampered object is named as such.
    let drained = io::copy(&mut reader, &mut io::sink());
    match (added, drained) {
        (_, Err(e)) => Err(read_error(&id, e)),
        (added, Ok(_)) => Ok(added?),
    }
}

/// A failed read of object `id`, in the CAS's words when they are there.
fn read_error(id: &ObjectId, e: io::Error) -> OutputError {
    match CasError::in_io(&e) {
        Some(cas) => OutputError::Object(cas.to_string()),
        None => OutputError::Object(format!("cannot read object {id}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use local_store::LocalStoreConfig;
    use std::os::unix::fs::PermissionsExt;
    use store::store_path::{StoreDir, StoreReferences};

    struct Bed {
        dir: tempfile::TempDir,
        store: LocalStore,
        archive: Archive,
    }

    fn bed() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalStoreConfig::new(
            StoreDir::new(dir.path().join("store").to_str().unwrap()).unwrap(),
            dir.path().join("var/nix"),
            dir.path().join("var/log/nix"),
        );
        let store = LocalStore::open(config).unwrap();
        let archive = Archive::open(dir.path().join("witness")).unwrap();
        Bed { dir, store, archive }
    }

    /// A tree with a file, a subdirectory and a symlink; its NAR's hash
    /// in `algorithm` and the fixed-output path declaring it.
    fn tree(b: &Bed, algorithm: Algorithm) -> (std::path::PathBuf, ContentAddress, StorePath) {
        let tree = b.dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("payload.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::write(tree.join("sub/run"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(tree.join("sub/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("payload.bin", tree.join("link")).unwrap();
        let (hash, _) = local_store::nar_fs::hash_path(&tree, algorithm).unwrap();
        let method = FileIngestionMethod::Recursive;
        let path =
            b.store.store_dir().make_fixed_output_path("tree", method, &hash, &StoreReferences::default()).unwrap();
        (tree, ContentAddress { method: ContentAddressMethod::Fixed(method), hash }, path)
    }

    fn drv_path(b: &Bed) -> StorePath {
        let dir = b.store.store_dir();
        dir.parse_path(&format!("{}/{}-tree.drv", dir.as_str(), "0".repeat(32))).unwrap()
    }

    #[test]
    fn a_recursive_output_kept_by_sha512_is_copied_back_as_the_same_path() {
        let b = bed();
        let (tree, ca, path) = tree(&b, Algorithm::Sha512);
        // The output where a build leaves it (left there unregistered: the
        // add replaces such a leftover).
        std::fs::create_dir_all(b.store.real_path(&path).parent().unwrap()).unwrap();
        std::fs::rename(&tree, b.store.real_path(&path)).unwrap();
        let id = keep_output(&b.archive, &b.store, &path, &ca, OutputMode::Recursive).unwrap();
        assert_eq!(b.archive.output_for(&ca.hash, OutputMode::Recursive).unwrap(), Some(id));
        assert_eq!(b.archive.output_for(&ca.hash, OutputMode::Flat).unwrap(), None);

        assert!(!b.store.is_valid(&path).unwrap());
        copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Recursive, id).unwrap();
        let info = b.store.path_info(&path).unwrap();
        assert_eq!(info.ca, Some(ca));
        assert!(info.references.is_empty());
        assert_eq!(info.deriver, Some(drv_path(&b)));
        assert_eq!(info.nar_hash, id.to_hash());
        let real = b.store.real_path(&path);
        assert_eq!(std::fs::read(real.join("payload.bin")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(std::fs::read_link(real.join("link")).unwrap(), std::path::Path::new("payload.bin"));
    }

    #[test]
    fn a_tampered_nar_is_refused_by_its_object_name() {
        let b = bed();
        let (tree, ca, path) = tree(&b, Algorithm::Sha256);
        let mut nar = Vec::new();
        local_store::nar_fs::dump(&tree, &mut nar).unwrap();
        let id = b.archive.put_output(&ca.hash, OutputMode::Recursive, &mut &nar[..]).unwrap();
        let object = b.dir.path().join("witness/cas").join(id.to_hex());
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Still a well-formed NAR, of other contents; then one cut short.
        let mut flipped = nar.clone();
        let at = flipped.windows(4).position(|w| w == [7, 7, 7, 7]).unwrap();
        flipped[at] = 8;
        for tampered in [flipped, nar[..nar.len() - 100].to_vec()] {
            std::fs::write(&object, &tampered).unwrap();
            let err = copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Recursive, id)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("object {id} is tampered: its bytes hash to ")), "{err}");
            assert!(!err.contains('\n'), "{err}");
            assert!(!b.store.is_valid(&path).unwrap());
        }
    }

    #[test]
    fn a_flat_output_is_copied_back_from_its_bytes() {
        let b = bed();
        let bytes = b"flat output bytes".repeat(1000);
        let hash = Algorithm::Sha1.digest(&bytes);
        let method = FileIngestionMethod::Flat;
        let path = b.store.store_dir().make_fixed_output_path("f", method, &hash, &StoreReferences::default()).unwrap();
        let ca = ContentAddress { method: ContentAddressMethod::Fixed(method), hash };
        let id = b.archive.put_output(&hash, OutputMode::Flat, &mut &bytes[..]).unwrap();
        copy_output(&b.archive, &b.store, &drv_path(&b), &path, &ca, OutputMode::Flat, id).unwrap();
        assert_eq!(std::fs::read(b.store.real_path(&path)).unwrap(), bytes);
        let nar = store::nar::dump_bytes(&bytes, false);
        assert_eq!(b.store.path_info(&path).unwrap().nar_hash, Algorithm::Sha256.digest(&nar));
    }
}
