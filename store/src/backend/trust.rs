//! The one check of whether a path may enter a store from a source that is
//! not trusted (a client, a binary cache): it is content-addressed (its
//! content address, with its references, gives its path) or it carries a
//! valid signature by a trusted key. CppNix spreads this over
//! `ValidPathInfo::isContentAddressed` and `checkSignatures`
//! (src/libstore/path-info.cc) and the daemon's `pathInfoIsUntrusted`.
//!
//! Callers decide what to do with a [`Verdict`] (`require-sigs` off, a
//! `?trusted=1` cache); the messages of the refusals live here, in
//! [`TrustError`], so every caller words them the same way.

use crate::path_info::PathInfo;
use crate::signing::{self, PublicKeys};
use crate::store_path::{StoreDir, StoreReferences};

/// A path refused by the trust check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Neither content-addressed nor signed by a trusted key (CppNix's
    /// daemon wording). The full path.
    #[error("cannot add path '{0}' because it lacks a signature by a trusted key")]
    Unsigned(String),
    /// It claims a content address that does not give its path (CppNix's
    /// `addValidPath` wording). The full path.
    #[error("cannot add path '{0}' to the Nix store because it claims to be content-addressed but isn't")]
    FalseContentAddress(String),
}

/// What the trust check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Its content address gives its path: no signature needed.
    ContentAddressed,
    /// At least one valid signature by a trusted key. `false_ca`: it also
    /// claimed a content address that does not give its path.
    Signed { false_ca: bool },
    /// Neither. `false_ca` as for `Signed`.
    Untrusted { false_ca: bool },
}

impl Verdict {
    /// Content-addressed or signed.
    pub fn is_trusted(self) -> bool {
        !matches!(self, Verdict::Untrusted { .. })
    }

    /// It claimed a content address that does not give its path.
    pub fn false_ca(self) -> bool {
        matches!(self, Verdict::Signed { false_ca: true } | Verdict::Untrusted { false_ca: true })
    }
}

/// Whether the claimed content address gives the path (CppNix's
/// `isContentAddressed`): `None` when it claims none.
pub fn ca_gives_path(dir: &StoreDir, info: &PathInfo) -> Option<bool> {
    let ca = info.ca.as_ref()?;
    let refs = StoreReferences {
        others: info.references_without_self().cloned().collect(),
        self_ref: info.references.contains(&info.path),
    };
    Some(dir.make_path_from_ca(info.path.name(), ca, &refs).is_ok_and(|p| p == info.path))
}

/// Whether the path is content-addressed (claims a content address that
/// gives it).
pub fn is_content_addressed(dir: &StoreDir, info: &PathInfo) -> bool {
    ca_gives_path(dir, info) == Some(true)
}

/// Refuses a path that claims a content address that does not give it; a
/// path that claims none passes.
pub fn require_true_ca(dir: &StoreDir, info: &PathInfo) -> Result<(), TrustError> {
    match ca_gives_path(dir, info) {
        Some(false) => Err(TrustError::FalseContentAddress(dir.display(&info.path))),
        _ => Ok(()),
    }
}

/// How many of the path's signatures are valid signatures by `keys` of its
/// fingerprint (0 when it has none, e.g. its NAR size is unknown).
pub fn count_trusted_signatures(dir: &StoreDir, info: &PathInfo, keys: &PublicKeys) -> usize {
    match signing::fingerprint(dir, &info.path, &info.nar_hash, info.nar_size, &info.references) {
        Ok(fp) => keys.count_valid(fp.as_bytes(), info.sigs.iter().map(String::as_str)),
        Err(_) => 0,
    }
}

/// The trust check. Signatures are verified only when the content address
/// does not already settle it.
pub fn verdict(dir: &StoreDir, info: &PathInfo, keys: &PublicKeys) -> Verdict {
    let false_ca = match ca_gives_path(dir, info) {
        Some(true) => return Verdict::ContentAddressed,
        Some(false) => true,
        None => false,
    };
    if count_trusted_signatures(dir, info, keys) > 0 {
        Verdict::Signed { false_ca }
    } else {
        Verdict::Untrusted { false_ca }
    }
}

/// Refuses a path that is neither content-addressed nor signed by `keys`.
pub fn require_trusted(dir: &StoreDir, info: &PathInfo, keys: &PublicKeys) -> Result<(), TrustError> {
    if verdict(dir, info, keys).is_trusted() { Ok(()) } else { Err(TrustError::Unsigned(dir.display(&info.path))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content_address::{ContentAddress, ContentAddressMethod};
    use crate::hash::Algorithm;
    use crate::signing::SecretKey;
    use std::collections::BTreeSet;

    fn dir() -> StoreDir {
        StoreDir::new("/nix/store").unwrap()
    }

    /// A text path, as `builtins.toFile` makes it, with its true CA.
    fn text_path(contents: &str, refs: &BTreeSet<crate::store_path::StorePath>) -> PathInfo {
        let ca = ContentAddress { method: ContentAddressMethod::Text, hash: Algorithm::Sha256.digest(contents) };
        let sr = StoreReferences { others: refs.clone(), self_ref: false };
        let path = dir().make_path_from_ca("hello.txt", &ca, &sr).unwrap();
        let mut info = PathInfo::new(path, Algorithm::Sha256.digest("nar"), 120);
        info.references = refs.clone();
        info.ca = Some(ca);
        info
    }

    fn input_addressed() -> PathInfo {
        let path = dir().parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-foo").unwrap();
        PathInfo::new(path, Algorithm::Sha256.digest("nar"), 120)
    }

    #[test]
    fn true_content_address_needs_no_signature() {
        let info = text_path("hello", &BTreeSet::new());
        assert_eq!(ca_gives_path(&dir(), &info), Some(true));
        assert_eq!(verdict(&dir(), &info, &PublicKeys::new()), Verdict::ContentAddressed);
        require_trusted(&dir(), &info, &PublicKeys::new()).unwrap();
        require_true_ca(&dir(), &info).unwrap();
    }

    #[test]
    fn a_reference_not_in_the_address_makes_it_false() {
        let mut info = text_path("hello", &BTreeSet::new());
        info.references.insert(input_addressed().path);
        assert_eq!(ca_gives_path(&dir(), &info), Some(false));
        assert_eq!(verdict(&dir(), &info, &PublicKeys::new()), Verdict::Untrusted { false_ca: true });
        assert_eq!(
            require_true_ca(&dir(), &info).unwrap_err().to_string(),
            format!(
                "cannot add path '{}' to the Nix store because it claims to be content-addressed but isn't",
                dir().display(&info.path)
            )
        );
    }

    #[test]
    fn no_content_address_is_not_a_false_one() {
        let info = input_addressed();
        assert_eq!(ca_gives_path(&dir(), &info), None);
        assert!(!is_content_addressed(&dir(), &info));
        require_true_ca(&dir(), &info).unwrap();
    }

    #[test]
    fn signatures_count_only_by_trusted_keys() {
        let key = SecretKey::generate("cache-1").unwrap();
        let other = SecretKey::generate("cache-2").unwrap();
        let keys: PublicKeys = [key.to_public_key()].into_iter().collect();
        let mut info = input_addressed();
        assert_eq!(
            require_trusted(&dir(), &info, &keys).unwrap_err().to_string(),
            "cannot add path '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-foo' because it lacks a signature by a trusted key"
        );
        let fp = signing::fingerprint(&dir(), &info.path, &info.nar_hash, info.nar_size, &info.references).unwrap();
        info.sigs.insert(other.sign(fp.as_bytes()).to_string());
        assert_eq!(count_trusted_signatures(&dir(), &info, &keys), 0);
        assert_eq!(verdict(&dir(), &info, &keys), Verdict::Untrusted { false_ca: false });
        info.sigs.insert(key.sign(fp.as_bytes()).to_string());
        assert_eq!(count_trusted_signatures(&dir(), &info, &keys), 1);
        assert_eq!(verdict(&dir(), &info, &keys), Verdict::Signed { false_ca: false });
        // A signature over other metadata does not count.
        info.nar_size += 1;
        assert_eq!(count_trusted_signatures(&dir(), &info, &keys), 0);
    }

    #[test]
    fn a_signed_false_ca_is_trusted_but_noted() {
        let key = SecretKey::generate("cache-1").unwrap();
        let keys: PublicKeys = [key.to_public_key()].into_iter().collect();
        let mut info = text_path("hello", &BTreeSet::new());
        info.ca = Some(ContentAddress { method: ContentAddressMethod::Text, hash: Algorithm::Sha256.digest("other") });
        let fp = signing::fingerprint(&dir(), &info.path, &info.nar_hash, info.nar_size, &info.references).unwrap();
        info.sigs.insert(key.sign(fp.as_bytes()).to_string());
        let v = verdict(&dir(), &info, &keys);
        assert_eq!(v, Verdict::Signed { false_ca: true });
        assert!(v.is_trusted() && v.false_ca());
    }
}
