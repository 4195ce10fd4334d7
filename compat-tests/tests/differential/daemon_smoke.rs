//! The daemon harness itself: both daemons start on their own stores and
//! answer a stock client the same way.

use testkit::{Daemon, Nix, NixVersion, TestStore, line, run, write_file};

#[test]
fn both_daemons_add_the_same_file_and_stop_cleanly() {
    for version in NixVersion::ALL {
        let Some(nix) = Nix::find(version) else { return };
        let ours = TestStore::new();
        let theirs = TestStore::new();
        let a = Daemon::armitage(&ours);
        let b = Daemon::nix(&theirs, &nix);
        for (store, daemon) in [(&ours, &a), (&theirs, &b)] {
            let f = store.work_dir("in").join("f");
            write_file(&f, "same contents");
            let p = line(run(daemon.client(store, &nix, "nix-store").arg("--add").arg(&f)));
            assert!(p.starts_with(&store.store_dir), "{}: {p}", daemon.name);
            let refs = run(daemon.client(store, &nix, "nix-store").args(["-q", "--references", &p]));
            assert_eq!(refs, "", "{}", daemon.name);
        }
        assert!(a.stop().success(), "armitage exits cleanly on SIGTERM");
    }
}
