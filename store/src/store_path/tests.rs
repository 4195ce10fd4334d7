use super::*;
use crate::content_address::FileIngestionMethod;
use crate::hash::{Algorithm, Hash};

#[test]
fn names_follow_cppnix_2_26_rules() {
    assert!(check_name("hello-2.12.1").is_ok());
    assert!(check_name(".dotfile").is_ok());
    assert!(check_name("a?b=c+d_e").is_ok());
    assert_eq!(check_name(""), Err(StorePathError::EmptyName));
    for bad in [".", "..", ".-x", "..-x"] {
        assert!(matches!(check_name(bad), Err(StorePathError::DotName(_))), "{bad}");
    }
    assert!(matches!(check_name("a b"), Err(StorePathError::BadNameChar { c: ' ', .. })));
    assert!(matches!(check_name(&"x".repeat(212)), Err(StorePathError::NameTooLong(_))));
    assert!(check_name(&"x".repeat(211)).is_ok());
}

#[test]
fn base_names_are_validated() {
    let ok = "7rjj86a15146cq1d3qy068lml7n8ykzm-hello";
    let p = StorePath::from_base_name(ok).unwrap();
    assert_eq!(p.hash_part(), "7rjj86a15146cq1d3qy068lml7n8ykzm");
    assert_eq!(p.name(), "hello");
    assert_eq!(StorePath::from_digest(&p.digest(), "hello").unwrap(), p);
    assert!(matches!(
        StorePath::from_base_name("7rjj86a15146cq1d3qy068lml7n8ykze-hello"),
        Err(StorePathError::BadHashChar { c: 'e', .. })
    ));
    assert!(matches!(StorePath::from_base_name("short"), Err(StorePathError::TooShort(_))));
    assert!(matches!(
        StorePath::from_base_name("7rjj86a15146cq1d3qy068lml7n8ykzm_hello"),
        Err(StorePathError::MissingDash(_))
    ));
}

#[test]
fn store_dir_must_be_canonical() {
    for bad in ["", "/", "nix/store", "/nix/store/", "/nix//store", "/nix/./store", "/nix/../store"] {
        assert!(StoreDir::new(bad).is_err(), "{bad:?}");
    }
    let dir = StoreDir::new("/tmp/s").unwrap();
    let p = dir.parse_path("/tmp/s/7rjj86a15146cq1d3qy068lml7n8ykzm-hello").unwrap();
    assert_eq!(dir.display(&p), "/tmp/s/7rjj86a15146cq1d3qy068lml7n8ykzm-hello");
    assert!(matches!(
        dir.parse_path("/tmp/x/7rjj86a15146cq1d3qy068lml7n8ykzm-hello"),
        Err(StorePathError::NotInStore { .. })
    ));
    let (sp, rest) = dir.split_path("/tmp/s/7rjj86a15146cq1d3qy068lml7n8ykzm-hello/bin/hello").unwrap();
    assert_eq!((sp, rest), (p, "bin/hello"));
}

#[test]
fn fixed_output_rules() {
    let dir = StoreDir::default();
    let h = Algorithm::Sha1.digest(b"x");
    let refs = StoreReferences {
        others: [StorePath::from_base_name("7rjj86a15146cq1d3qy068lml7n8ykzm-hello").unwrap()].into(),
        self_ref: false,
    };
    assert_eq!(
        dir.make_fixed_output_path("x", FileIngestionMethod::Flat, &h, &refs),
        Err(StorePathError::FixedOutputReferences("x".into()))
    );
    assert_eq!(
        dir.make_fixed_output_path(
            "x",
            FileIngestionMethod::Git,
            &Algorithm::Sha256.digest(b"x"),
            &StoreReferences::default()
        ),
        Err(StorePathError::GitNeedsSha1)
    );
    // Recursive SHA-256 is a source path and may carry references.
    assert!(
        dir.make_fixed_output_path("x", FileIngestionMethod::Recursive, &Algorithm::Sha256.digest(b"x"), &refs).is_ok()
    );
    let _: Hash = h;
}
