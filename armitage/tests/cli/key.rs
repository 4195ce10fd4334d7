//! `armitage key generate` against `nix-store --generate-binary-cache-key`:
//! the same file formats, and keys Nix can sign and verify with.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use testkit::TestStore;

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text = text.trim_end_matches('=');
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap_or_else(|| panic!("{c:?} is not base-64 in {text:?}"));
        bits = (bits << 6) | v as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

/// A key file: its name, its decoded key bytes, its mode.
fn read_key(path: &Path) -> (String, Vec<u8>, u32) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.ends_with('\n'), "no newline in {text:?}, as Nix writes it");
    let (name, key) = text.split_once(':').unwrap_or_else(|| panic!("{text:?} is not name:key"));
    (name.to_owned(), base64_decode(key), path.metadata().unwrap().permissions().mode() & 0o777)
}

#[test]
fn key_generate_matches_nix_store_generate_binary_cache_key() {
    let Some(nix) = nix_2_8() else { return };
    let store = TestStore::new();
    let work = store.work_dir("keys");
    testkit::run(
        store
            .nix(&nix, "nix-store")
            .args(["--generate-binary-cache-key", "cache.example-1"])
            .arg(work.join("nix.sec"))
            .arg(work.join("nix.pub")),
    );
    testkit::run(
        store
            .armitage()
            .args(["key", "generate", "cache.example-1"])
            .arg(work.join("our.sec"))
            .arg(work.join("our.pub")),
    );
    let (nix_sec, nix_pub) = (read_key(&work.join("nix.sec")), read_key(&work.join("nix.pub")));
    let (our_sec, our_pub) = (read_key(&work.join("our.sec")), read_key(&work.join("our.pub")));
    for (ours, theirs) in [(&our_sec, &nix_sec), (&our_pub, &nix_pub)] {
        assert_eq!(ours.0, theirs.0, "key name");
        assert_eq!(ours.1.len(), theirs.1.len(), "key length");
        assert_eq!(ours.2, theirs.2, "file mode");
    }
    assert_eq!((our_sec.1.len(), our_pub.1.len(), our_sec.2), (64, 32, 0o600));
    // An ed25519 secret key (libsodium layout) ends with its public key.
    assert_eq!(our_sec.1[32..], our_pub.1[..]);
    assert_ne!(our_sec.1, nix_sec.1);
}

#[test]
fn nix_signs_and_verifies_with_our_keys() {
    let Some(nix) = nix_2_8() else { return };
    let store = building_store();
    let work = store.work_dir("keys");
    // An input-addressed path: content-addressed ones need no signature.
    let path = build_chain(&store, &nix, "signed", "1", &[]);
    for name in ["a", "b"] {
        testkit::run(
            store
                .armitage()
                .args(["key", "generate", &format!("key-{name}")])
                .arg(work.join(format!("{name}.sec")))
                .arg(work.join(format!("{name}.pub"))),
        );
    }
    testkit::run(nix_cli(&store, &nix).args(["store", "sign", "--key-file"]).arg(work.join("a.sec")).arg(&path));
    let verify = |public: &str| {
        let key = std::fs::read_to_string(work.join(public)).unwrap();
        run_any(nix_cli(&store, &nix).args([
            "store",
            "verify",
            "--sigs-needed",
            "1",
            "--trusted-public-keys",
            &key,
            &path,
        ]))
    };
    let (ok, _, err) = verify("a.pub");
    assert!(ok, "Nix rejects a signature made with our key:\n{err}");
    let (ok, _, err) = verify("b.pub");
    assert!(!ok, "Nix accepted a signature against the wrong key:\n{err}");
}
