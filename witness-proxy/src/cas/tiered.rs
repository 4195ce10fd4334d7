//! A local CAS in front of a remote one ([`Tiered`]): what is written goes
//! to the local one only; an object the local one lacks is read from the
//! remote one. The daemon's witness archive with an `[s3]` bucket: the
//! proxy never waits for S3 (the upload queue copies objects up later),
//! and a rebuild finds in the bucket an object the local archive no longer
//! has (another machine, a lost disk).

use super::backend::{Cas, CasWriter, Result};
use super::id::ObjectId;
use std::io::Read;
use std::sync::Arc;

pub struct Tiered {
    local: Arc<dyn Cas>,
    remote: Arc<dyn Cas>,
}

impl Tiered {
    pub fn new(local: Arc<dyn Cas>, remote: Arc<dyn Cas>) -> Tiered {
        Tiered { local, remote }
    }

    /// The CAS objects are written to.
    pub fn local(&self) -> &Arc<dyn Cas> {
        &self.local
    }
}

impl Cas for Tiered {
    fn describe(&self) -> String {
        format!("{}, then {}", self.local.describe(), self.remote.describe())
    }

    fn writer(&self) -> Result<Box<dyn CasWriter>> {
        self.local.writer()
    }

    /// The local object, else the remote one; both are checked as they are
    /// read, as every get is.
    fn get(&self, id: &ObjectId) -> Result<Option<Box<dyn Read + Send>>> {
        match self.local.get(id)? {
            Some(reader) => Ok(Some(reader)),
            None => {
                let remote = self.remote.get(id)?;
                if remote.is_some() {
                    tracing::info!(object = %id, "reading object {id} from {}", self.remote.describe());
                }
                Ok(remote)
            }
        }
    }

    fn has(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.local.has(id)? || self.remote.has(id)?)
    }

    fn size(&self, id: &ObjectId) -> Result<Option<u64>> {
        match self.local.size(id)? {
            Some(size) => Ok(Some(size)),
            None => self.remote.size(id),
        }
    }

    /// The local objects: what this archive holds and collects.
    fn list(&self) -> Result<Vec<ObjectId>> {
        self.local.list()
    }

    /// Removes the local object only: the bucket is shared, and collected
    /// on its own terms.
    fn remove(&self, id: &ObjectId) -> Result<bool> {
        self.local.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::{CasError, LocalCas};
    use std::io::Read;

    fn read(cas: &dyn Cas, id: &ObjectId) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        cas.get(id).unwrap().expect("there").read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn writes_go_local_and_reads_fall_back_to_the_remote() {
        let (a, b) = (testkit::TempDir::new(), testkit::TempDir::new());
        let local: Arc<dyn Cas> = Arc::new(LocalCas::open(a.path()).unwrap());
        let remote_cas = Arc::new(LocalCas::open(b.path()).unwrap());
        let remote: Arc<dyn Cas> = remote_cas.clone();
        let tiered = Tiered::new(local.clone(), remote.clone());

        let (written, _) = tiered.put(&mut &b"written here"[..]).unwrap();
        assert!(local.has(&written).unwrap() && !remote.has(&written).unwrap());

        let (far, _) = remote.put(&mut &b"only in the bucket"[..]).unwrap();
        assert!(!local.has(&far).unwrap());
        assert!(tiered.has(&far).unwrap());
        assert_eq!(tiered.size(&far).unwrap(), Some(18));
        assert_eq!(read(&tiered, &far).unwrap(), b"only in the bucket");
        assert_eq!(tiered.list().unwrap(), vec![written], "only the local objects are listed");

        // A remote object whose bytes were changed is refused at its end.
        let path = remote_cas.object_path(&far);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(&path, b"only in the Bucket").unwrap();
        let e = read(&tiered, &far).unwrap_err();
        assert!(matches!(CasError::in_io(&e), Some(CasError::Tampered { .. })), "{e}");

        assert!(tiered.remove(&far).is_ok_and(|removed| !removed), "the remote object is not removed");
        assert!(remote.has(&far).unwrap());
        assert!(tiered.get(&ObjectId::of(b"nowhere")).unwrap().is_none());
    }
}
