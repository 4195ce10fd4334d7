//! Adding to the store (CppNix daemon.cc): AddToStore in both its forms,
//! AddTextToStore, AddToStoreNar (framed, tunnelled or inline by minor),
//! AddMultipleToStore, ImportPaths, AddBuildLog and AddSignatures. Uploads
//! are read by blocking code while they stream in (`io`'s bridges, decoded
//! with `worker_protocol::sync`); whatever fails, the stream is left
//! in step where the protocol allows. What an untrusted client may add, and
//! how it is checked, is the policy's.

use super::common::blocking;
use crate::daemon::io::{SyncReader, TunnelReader};
use crate::daemon::policy;
use crate::daemon::session::{Input, OpError, OpResult, Output, Session};
use crate::daemon::state::DaemonState;
use local_store::{AddOptions, LocalStore};
use std::collections::BTreeSet;
use std::io::BufRead;
use store::content_address::{ContentAddressMethod, FileIngestionMethod};
use store::hash::Algorithm;
use store::path_info::PathInfo;
use store::store_path::{StoreDir, StorePath};
use worker_protocol::{self as wp, FramedReader, WireWrite, sync};

/// The signature check ([`policy::check_signatures`]) with the daemon's
/// settings and keys.
fn check_signatures(d: &DaemonState, dir: &StoreDir, info: &PathInfo) -> local_store::Result<()> {
    policy::check_signatures(d.settings.require_sigs, &d.public_keys, dir, info)
}

pub async fn add_to_store<R: Input, W: Output>(
    s: &mut Session<R, W>,
    name: String,
    method: ContentAddressMethod,
    algorithm: Algorithm,
    references: BTreeSet<StorePath>,
    repair: bool,
) -> OpResult {
    let repair = policy::add_repair(s.trust, repair);
    let handle = tokio::runtime::Handle::current();
    let store = s.store.clone();
    let mut framed = FramedReader::new(&mut s.reader);
    let added = blocking(|| {
        let mut input = SyncReader::buffered(&mut framed, handle.clone());
        store.add_from_dump(&name, method, algorithm, &references, &mut input, AddOptions { repair })
    });
    // Keep the stream in step whatever happened.
    framed.drain().await?;
    let info = added?;
    let dir = s.store.store_dir().clone();
    s.last().await?;
    wp::write_path_info(&mut s.writer, &dir, &info, s.minor).await?;
    Ok(())
}

pub async fn add_to_store_legacy<R: Input, W: Output>(
    s: &mut Session<R, W>,
    name: String,
    method: FileIngestionMethod,
    algorithm: Algorithm,
) -> OpResult {
    let handle = tokio::runtime::Handle::current();
    let store = s.store.clone();
    let reader = &mut s.reader;
    // Always a NAR; for flat hashing it holds one regular file.
    let added = blocking(|| -> local_store::Result<PathInfo> {
        let mut input = SyncReader::direct(reader, handle);
        match method {
            FileIngestionMethod::Flat => add_flat_from_nar(&store, &name, algorithm, &mut input),
            _ => store.add_from_dump(
                &name,
                ContentAddressMethod::Fixed(method),
                algorithm,
                &BTreeSet::new(),
                &mut input,
                AddOptions::default(),
            ),
        }
    })
    .map_err(|e| OpError::Fatal(e.to_string()))?;
    let path = s.store.display(&added.path);
    s.last().await?;
    s.writer.write_str(&path).await?;
    Ok(())
}

pub async fn add_text_to_store<R: Input, W: Output>(
    s: &mut Session<R, W>,
    name: String,
    text: Vec<u8>,
    references: BTreeSet<StorePath>,
) -> OpResult {
    let info = blocking(|| s.store.add_text(&name, &text, &references, AddOptions::default()))?;
    let path = s.store.display(&info.path);
    s.last().await?;
    s.writer.write_str(&path).await?;
    Ok(())
}

pub async fn add_to_store_nar<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    mut info: Box<PathInfo>,
    repair: bool,
    dont_check_sigs: bool,
) -> OpResult {
    let check = policy::add_checks_signatures(s.trust, dont_check_sigs);
    if !policy::keeps_ultimate(s.trust) {
        info.ultimate = false;
    }
    let dir = s.store.store_dir().clone();
    let verdict = if check { check_signatures(d, &dir, &info) } else { Ok(()) };
    let handle = tokio::runtime::Handle::current();
    let (minor, store) = (s.minor, s.store.clone());
    let opts = AddOptions { repair: policy::add_repair(s.trust, repair) };
    if minor >= 23 {
        let mut framed = FramedReader::new(&mut s.reader);
        let added = blocking(|| {
            verdict?;
            let mut input = SyncReader::buffered(&mut framed, handle);
            store.add_nar(&info, &mut input, opts)
        });
        framed.drain().await?;
        added?;
    } else if minor >= 21 {
        let added = blocking(|| {
            verdict?;
            let mut input = TunnelReader::new(&mut s.reader, &mut s.writer, minor);
            store.add_nar(&info, &mut input, opts)
        });
        // Tunnelled: nothing unasked-for is in the stream, so a
        // failure (a hash mismatch, say) leaves it in step.
        added?;
    } else {
        let reader = &mut s.reader;
        let added = blocking(|| {
            let mut input = SyncReader::direct(reader, handle);
            match verdict {
                Ok(()) => store.add_nar(&info, &mut input, opts),
                Err(e) => {
                    // Read past the NAR so the stream stays in step.
                    store::nar::NarReader::new(&mut input)
                        .skip_to_end()
                        .map_err(|n| local_store::Error::Nar(n.to_string()))?;
                    Err(e)
                }
            }
        });
        added?;
    }
    s.last().await?;
    Ok(())
}

pub async fn add_multiple_to_store<R: Input, W: Output>(
    s: &mut Session<R, W>,
    d: &DaemonState,
    repair: bool,
    dont_check_sigs: bool,
) -> OpResult {
    let trust = s.trust;
    let check = policy::add_checks_signatures(trust, dont_check_sigs);
    let opts = AddOptions { repair: policy::add_repair(trust, repair) };
    let handle = tokio::runtime::Handle::current();
    let store = s.store.clone();
    let dir = store.store_dir().clone();
    let mut framed = FramedReader::new(&mut s.reader);
    let added = blocking(|| -> local_store::Result<()> {
        let mut input = SyncReader::buffered(&mut framed, handle.clone());
        let count =
            sync::read_u64(&mut input).map_err(|e| local_store::Error::Other(format!("reading a path list: {e}")))?;
        for _ in 0..count {
            let mut info = sync::read_path_info(&mut input, &dir, &d.limits)
                .map_err(|e| local_store::Error::Other(e.to_string()))?;
            if !policy::keeps_ultimate(trust) {
                info.ultimate = false;
            }
            if check {
                check_signatures(d, &dir, &info)?;
            }
            store.add_nar(&info, &mut input, opts)?;
        }
        Ok(())
    });
    framed.drain().await?;
    added?;
    s.last().await?;
    Ok(())
}

pub async fn import_paths<R: Input, W: Output>(s: &mut Session<R, W>, d: &DaemonState) -> OpResult {
    let check = policy::import_checks_signatures(s.trust);
    let (minor, store) = (s.minor, s.store.clone());
    let dir = store.store_dir().clone();
    let imported = blocking(|| {
        let mut input = TunnelReader::new(&mut s.reader, &mut s.writer, minor);
        store.import_paths(&mut input, &|info| if check { check_signatures(d, &dir, info) } else { Ok(()) })
    })?;
    // The client sends only what was asked for: after a failure the
    // stream is still in step and the connection goes on, as CppNix's.
    s.last().await?;
    s.writer.write_strings(imported.iter().map(|p| dir.display(p)).collect::<Vec<_>>()).await?;
    Ok(())
}

pub async fn add_build_log<R: Input, W: Output>(s: &mut Session<R, W>, drv: StorePath) -> OpResult {
    if let Err(refused) = policy::add_build_log(s.trust) {
        FramedReader::new(&mut s.reader).drain().await?;
        return Err(refused.into());
    }
    let handle = tokio::runtime::Handle::current();
    let store = s.store.clone();
    let mut framed = FramedReader::new(&mut s.reader);
    let added = blocking(|| {
        let mut input = SyncReader::buffered(&mut framed, handle);
        store.add_build_log(&drv, &mut input)
    });
    framed.drain().await?;
    added?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

/// Open to every client (see `policy`).
pub async fn add_signatures<R: Input, W: Output>(
    s: &mut Session<R, W>,
    path: StorePath,
    sigs: BTreeSet<String>,
) -> OpResult {
    blocking(|| s.store.add_signatures(&path, &sigs))?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}

/// A flat add from the NAR of one regular file (AddToStore below 1.25). The
/// contents stream from the socket into the store's staging file, so a big
/// file costs disk, not memory (CppNix buffers it whole). The NAR's closing
/// `)` is read after the add: a client that breaks off there gets an error,
/// though the file it sent in full is in the store by then.
fn add_flat_from_nar(
    store: &LocalStore,
    name: &str,
    algorithm: Algorithm,
    input: &mut dyn BufRead,
) -> local_store::Result<PathInfo> {
    let not_one_file = || local_store::Error::Other("flat hashing needs a NAR of a single regular file".into());
    let bad = |e: store::nar::NarError| local_store::Error::Nar(e.to_string());
    let mut reader = store::nar::NarReader::new(input);
    let added = match reader.next().map_err(bad)? {
        Some(store::nar::Event::Regular { mut contents, .. }) => store.add_from_dump(
            name,
            ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
            algorithm,
            &BTreeSet::new(),
            &mut contents,
            AddOptions::default(),
        )?,
        _ => return Err(not_one_file()),
    };
    if reader.next().map_err(bad)?.is_some() {
        return Err(not_one_file());
    }
    Ok(added)
}
