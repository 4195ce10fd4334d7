//! Sending a path's contents to the client: NarFromPath (the NAR, written
//! by blocking code straight to the socket when there is one) and
//! ExportPath (a `nix-store --export` record in STDERR_WRITE messages).
//! The counterparts of `add`.

use super::common::{blocking, failed, quick, require_valid};
use crate::daemon::io::{SocketWriter, StderrWriteSink, SyncWriter};
use crate::daemon::session::{Input, OpError, OpResult, Output, Session};
use store::store_path::StorePath;
use worker_protocol::WireWrite;

pub async fn nar_from_path<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    if !quick(|| s.store.is_valid(&p))? {
        return Err(failed(format!("path '{}' is not valid", s.store.display(&p))));
    }
    s.last().await?;
    let real = s.store.real_path(&p);
    let sent = match s.socket_fd {
        Some(fd) => {
            tokio::io::AsyncWriteExt::flush(&mut s.writer).await?;
            blocking(|| local_store::nar_fs::dump(&real, &mut SocketWriter::new(fd)))
        }
        None => {
            let handle = tokio::runtime::Handle::current();
            blocking(|| {
                let mut out = SyncWriter::new(&mut s.writer, handle);
                local_store::nar_fs::dump_parallel(&real, &mut out)
            })
        }
    };
    sent.map_err(|e| OpError::Fatal(format!("sending the NAR of '{}': {e}", s.store.display(&p))))?;
    Ok(())
}

pub async fn export_path<R: Input, W: Output>(s: &mut Session<R, W>, p: StorePath) -> OpResult {
    // CppNix `exportPath` starts with `queryPathInfo`: nothing is sent for an invalid path.
    require_valid(s, &p, "is not valid")?;
    let handle = tokio::runtime::Handle::current();
    let minor = s.minor;
    let store = s.store.clone();
    blocking(|| {
        let mut out = StderrWriteSink::new(&mut s.writer, handle, minor);
        store.export_path(&p, &mut out)?;
        std::io::Write::flush(&mut out).map_err(|e| local_store::Error::Other(e.to_string()))
    })
    .map_err(|e| OpError::Fatal(e.to_string()))?;
    s.last().await?;
    s.writer.write_u64_wire(1).await?;
    Ok(())
}
