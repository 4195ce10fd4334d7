//! Keys, signatures and fingerprints: the RFC 8032 test vector in Nix's key
//! format, the error cases, and keys exchanged with the real Nix in both
//! directions.

use data_encoding::{BASE64, HEXLOWER};
use store::hash::{Algorithm, Hash};
use store::narinfo::NarInfo;
use store::signing::{KeyKind, PublicKey, PublicKeys, SecretKey, Signature, SigningError, fingerprint};
use store::store_path::{StoreDir, StorePath};
use testkit::{Nix, NixVersion, TestStore, run};

/// RFC 8032 section 7.1, test 2: seed, public key, the one-byte message and
/// its signature.
const SEED: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
const PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const MESSAGE: &str = "72";
const SIGNATURE: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                         085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

fn hex(s: &str) -> Vec<u8> {
    HEXLOWER.decode(s.as_bytes()).unwrap()
}

fn rfc_secret_key_text() -> String {
    format!("rfc-1:{}", BASE64.encode(&[hex(SEED), hex(PUBLIC)].concat()))
}

#[test]
fn rfc8032_vector_in_nix_key_format() {
    let sk = SecretKey::parse(&rfc_secret_key_text()).unwrap();
    assert_eq!(sk.name(), "rfc-1");
    assert_eq!(sk.to_string(), rfc_secret_key_text(), "prints back");
    let pk = sk.to_public_key();
    assert_eq!(pk.to_string(), format!("rfc-1:{}", BASE64.encode(&hex(PUBLIC))));
    assert_eq!(PublicKey::parse(&pk.to_string()).unwrap(), pk);

    let sig = sk.sign(&hex(MESSAGE));
    assert_eq!(sig.to_string(), format!("rfc-1:{}", BASE64.encode(&hex(SIGNATURE))));
    assert_eq!(Signature::parse(&sig.to_string()).unwrap(), sig);
    assert!(pk.verify(&hex(MESSAGE), &sig));
    assert!(!pk.verify(b"other message", &sig));
}

#[test]
fn verification_goes_by_key_name() {
    let a = SecretKey::generate("a-1").unwrap();
    let b = SecretKey::generate("b-1").unwrap();
    let data = b"1;/nix/store/x;sha256:y;1;";
    let sig_a = a.sign(data);
    assert!(a.to_public_key().verify(data, &sig_a));
    assert!(!b.to_public_key().verify(data, &sig_a));

    // The same key under another name does not verify it either.
    let renamed = PublicKey::parse(&a.to_public_key().to_string().replacen("a-1", "c-1", 1)).unwrap();
    assert!(!renamed.verify(data, &sig_a));

    let keys: PublicKeys = [b.to_public_key(), a.to_public_key()].into_iter().collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.verify(data, &sig_a.to_string()), Ok(true));
    assert_eq!(keys.verify(b"tampered", &sig_a.to_string()), Ok(false));
    assert_eq!(keys.verify(data, "unknown-1:AAAA"), Ok(false), "unknown key names are simply not trusted");
    assert_eq!(keys.verify(data, "no colon"), Ok(false));
    assert!(matches!(
        keys.verify(data, "a-1:AAAA"),
        Err(SigningError::WrongLength { kind: KeyKind::Signature, len: 3, expected: 64, .. })
    ));

    let sig_b = b.sign(data).to_string();
    let sigs = [sig_a.to_string(), sig_b.clone(), sig_b, "a-1:AAAA".to_owned(), "x:y".to_owned()];
    assert_eq!(keys.count_valid(data, sigs.iter().map(String::as_str)), 3);

    // The first key of a name wins, as in CppNix.
    let mut only_b: PublicKeys = [b.to_public_key()].into_iter().collect();
    only_b.insert(PublicKey::parse(&a.to_public_key().to_string().replacen("a-1", "b-1", 1)).unwrap());
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b.verify(data, &b.sign(data).to_string()), Ok(true));
}

#[test]
fn malformed_keys_are_reported_with_their_name() {
    let cases: &[(&str, SigningError)] = &[
        ("nocolon", SigningError::Corrupt { kind: KeyKind::Public, name: String::new() }),
        (":AAAA", SigningError::Corrupt { kind: KeyKind::Public, name: String::new() }),
        ("k-1:", SigningError::Corrupt { kind: KeyKind::Public, name: "k-1".into() }),
        ("k-1:AA AA", SigningError::BadBase64 { kind: KeyKind::Public, name: "k-1".into(), c: ' ' }),
        ("k-1:AAAA", SigningError::WrongLength { kind: KeyKind::Public, name: "k-1".into(), len: 3, expected: 32 }),
    ];
    for (text, expected) in cases {
        assert_eq!(PublicKey::parse(text).unwrap_err(), *expected, "{text}");
    }
    assert_eq!(
        PublicKey::parse("k-1:AAAA").unwrap_err().to_string(),
        "public key named 'k-1' is not valid: it decodes to 3 bytes, expected 32"
    );
    assert_eq!(
        SecretKey::parse("").unwrap_err().to_string(),
        "secret key is corrupt: expected '<name>:<base64>' but the name or the base-64 part is empty (name '')"
    );
    let public_only = format!("s-1:{}", BASE64.encode(&hex(PUBLIC)));
    assert_eq!(
        SecretKey::parse(&public_only).unwrap_err(),
        SigningError::WrongLength { kind: KeyKind::Secret, name: "s-1".into(), len: 32, expected: 64 }
    );
    // A secret key whose public half belongs to another seed.
    let mismatched = format!("s-1:{}", BASE64.encode(&[hex(SEED), vec![0x5a; 32]].concat()));
    assert_eq!(SecretKey::parse(&mismatched).unwrap_err(), SigningError::MismatchedSecretKey("s-1".into()));
    // Errors never show the secret.
    let bad = format!("s-1:{}!", &rfc_secret_key_text()[6..40]);
    let message = SecretKey::parse(&bad).unwrap_err().to_string();
    assert!(!message.contains(&rfc_secret_key_text()[6..20]), "{message}");
    assert!(format!("{:?}", SecretKey::parse(&rfc_secret_key_text()).unwrap()).contains("rfc-1"));
    assert!(
        !format!("{:?}", SecretKey::parse(&rfc_secret_key_text()).unwrap()).contains(&rfc_secret_key_text()[6..20])
    );

    assert!(SecretKey::generate("").is_err());
    assert!(SecretKey::generate("a:b").is_err());
}

#[test]
fn keys_load_as_cppnix_reads_them() {
    // A key file's trailing newline and missing padding are fine.
    let text = rfc_secret_key_text();
    assert!(SecretKey::parse(&format!("{text}\n")).is_ok());
    let pk = SecretKey::parse(&text).unwrap().to_public_key().to_string();
    assert_eq!(PublicKey::parse(pk.trim_end_matches('=')).unwrap().to_string(), pk);
}

#[test]
fn fingerprint_form() {
    let dir = StoreDir::new("/nix/store").unwrap();
    let path = StorePath::from_base_name("1p5my5zb66b9iihpfaji0xvwi7i8g4v0-out-test").unwrap();
    let a = StorePath::from_base_name("r6ni54fvlb65ha6drc8mngassizy5rns-a.txt").unwrap();
    let b = StorePath::from_base_name("yssw62baqi66wdzn78ri9skgn5jf7ns8-b.txt").unwrap();
    let hash = Algorithm::Sha256.digest(b"nar");
    assert_eq!(
        fingerprint(&dir, &path, &hash, 192, [&b, &a]).unwrap(),
        format!(
            "1;/nix/store/1p5my5zb66b9iihpfaji0xvwi7i8g4v0-out-test;sha256:{};192;\
             /nix/store/r6ni54fvlb65ha6drc8mngassizy5rns-a.txt,/nix/store/yssw62baqi66wdzn78ri9skgn5jf7ns8-b.txt",
            hash.to_nix32()
        )
    );
    assert!(fingerprint(&dir, &path, &hash, 1, []).unwrap().ends_with(";1;"));
    assert_eq!(
        fingerprint(&dir, &path, &hash, 0, []).unwrap_err().to_string(),
        "cannot calculate fingerprint of path '/nix/store/1p5my5zb66b9iihpfaji0xvwi7i8g4v0-out-test' because its size is not known"
    );
    let sha512 = Hash::parse_any(&Algorithm::Sha512.digest(b"x").to_sri(), None).unwrap();
    assert!(fingerprint(&dir, &path, &sha512, 1, []).unwrap().contains(";sha512:"));
}

// --- against the real Nix ---------------------------------------------------

#[test]
fn keys_generated_by_nix_load_and_derive_the_same_public_key() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let store = TestStore::new();
        let dir = store.work_dir("keys");
        let (sk_file, pk_file) = (dir.join("sk"), dir.join("pk"));
        run(store
            .nix(&nix, "nix-store")
            .arg("--generate-binary-cache-key")
            .arg("nix-made-1")
            .arg(&sk_file)
            .arg(&pk_file));
        let sk_text = std::fs::read_to_string(&sk_file).unwrap();
        let pk_text = std::fs::read_to_string(&pk_file).unwrap();

        let sk = SecretKey::parse(&sk_text).unwrap();
        let pk = PublicKey::parse(&pk_text).unwrap();
        assert_eq!(sk.name(), "nix-made-1");
        assert_eq!(sk.to_public_key(), pk, "{version}");
        assert_eq!(sk.to_public_key().to_string(), pk_text.trim_end(), "{version}");
        assert_eq!(sk.to_string(), sk_text.trim_end(), "{version}: prints back");

        let data = b"1;/nix/store/x;sha256:y;1;";
        assert!(pk.verify(data, &sk.sign(data)), "{version}");
    }
}

#[test]
fn nix_signs_with_a_key_we_generated() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { continue };
        let store = TestStore::new();
        let ours = SecretKey::generate("made-by-armitage-1").unwrap();
        let sk_file = store.work_dir("keys").join("sk");
        std::fs::write(&sk_file, ours.to_string()).unwrap();

        let input = store.work_dir("input").join("hello.txt");
        std::fs::write(&input, "hello").unwrap();
        let path = testkit::line(run(store.nix(&nix, "nix-store").arg("--add").arg(&input)));
        let cache = store.work_dir("cache");
        let url = format!("file://{}?secret-key={}", cache.display(), sk_file.display());
        run(store.nix(&nix, "nix").args(["--extra-experimental-features", "nix-command", "copy", "--to", &url, &path]));

        let dir = StoreDir::new(store.store_dir.clone()).unwrap();
        let sp = dir.parse_path(&path).unwrap();
        let text = std::fs::read_to_string(cache.join(format!("{}.narinfo", sp.hash_part()))).unwrap();
        let info = NarInfo::parse(&dir, &text, "cache").unwrap();
        assert_eq!(info.sigs.len(), 1, "{version}");
        assert!(info.sigs.iter().all(|s| s.starts_with("made-by-armitage-1:")));
        let keys: PublicKeys = [ours.to_public_key()].into_iter().collect();
        assert_eq!(info.count_valid_signatures(&dir, &keys).unwrap(), 1, "{version}");
    }
}
