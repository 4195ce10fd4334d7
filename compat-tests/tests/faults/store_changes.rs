//! The store changing on disk under a running daemon (issue 9, item 2).
//! CppNix opens the store in each connection's process, so every client
//! sees the store as it is on disk when it connects; admins and test suites
//! rely on it (wiping a state dir and running `nix-store --init`, restoring
//! `db.sqlite` from a backup, tmpfiles cleaning `temproots/`). Each test
//! runs the same steps against armitage and CppNix's nix-daemon of the same
//! version on twin stores and compares what clients see; the last one is
//! armitage's alone (CppNix does not notice a removed roots file).

use compat_tests::proto_client::{Client, Options, Wire};
use compat_tests::{Side, Twins, is_valid_on};
use testkit::{Daemon, Nix, NixVersion, TestStore, line, output, run, write_file};
use worker_protocol::Op;

/// `nix-store --add` of a file with `text` in `side`'s work dir, through
/// its daemon; the path in `side`'s terms.
fn add(tw: &Twins, side: Side, name: &str, text: &str) -> String {
    let f = tw.store(side).work_dir("in").join(name);
    write_file(&f, text);
    line(run(tw.client(side, "nix-store").arg("--add").arg(&f)))
}

/// Whether a stock client of `side`'s daemon says `path` is valid.
fn valid_for_client(tw: &Twins, side: Side, path: &str) -> bool {
    output(tw.client(side, "nix-store").args(["--check-validity", path])).status.success()
}

/// Whether CppNix, opening `side`'s store itself, says `path` is valid.
fn valid_on_disk(tw: &Twins, side: Side, path: &str) -> bool {
    output(tw.store(side).nix(&tw.nix, "nix-store").args(["--check-validity", path])).status.success()
}

/// A connection of our own to `side`'s daemon, handshaken.
fn connect(tw: &Twins, side: Side) -> Client {
    let (mut c, _) = Client::connect(&tw.daemon(side).socket, 34).expect("connect");
    c.set_options(&Options::default()).expect("SetOptions");
    c
}

/// Both sides must have answered alike.
fn same_answer(what: &str, answers: [bool; 2]) -> bool {
    assert_eq!(answers[0], answers[1], "{what}: armitage says {}, CppNix says {}", answers[0], answers[1]);
    answers[1]
}

/// `rm -rf $NIX_STATE_DIR && nix-store --init` while the daemons run: the
/// next clients work on the new store (no stale temp-roots file, no
/// deleted database), paths of the old one are gone, a client connected
/// from before finishes on the old one, garbage collection through the
/// daemon sees the new store, and the database is sound afterwards.
fn state_dir_made_again(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let before: [String; 2] = Side::BOTH.map(|side| add(&tw, side, "before", "added before the wipe"));
    let mut held: Vec<Client> = Side::BOTH.iter().map(|&side| connect(&tw, side)).collect();
    for side in Side::BOTH {
        let s = tw.store(side);
        std::fs::remove_dir_all(&s.state_dir).expect("wipe the state dir");
        run(s.nix(&tw.nix, "nix-store").arg("--init"));
    }

    let after: [String; 2] = Side::BOTH.map(|side| add(&tw, side, "after", "added after the wipe"));
    tw.assert_same("the path added after the wipe", &after[0], &after[1]);
    let answers = Side::BOTH.map(|side| valid_for_client(&tw, side, &before[side as usize]));
    assert!(!same_answer("the path added before the wipe, asked by a new client", answers));
    let answers = Side::BOTH.map(|side| valid_for_client(&tw, side, &after[side as usize]));
    assert!(same_answer("the path added after the wipe, asked by a new client", answers));
    let answers = Side::BOTH.map(|side| valid_on_disk(&tw, side, &after[side as usize]));
    assert!(same_answer("the path added after the wipe, in the new database on disk", answers));
    tw.same_lines("nix path-info --all", "nix", |_, cmd| {
        cmd.args(["path-info", "--all"]);
    });

    // A connection from before the wipe still answers from the old database.
    for (side, c) in Side::BOTH.into_iter().zip(held.iter_mut()) {
        assert!(is_valid_on(c, &before[side as usize]), "{side:?}: the old connection sees the old store");
    }
    drop(held);

    // Collection through the daemon: the old path's files are not valid
    // in the new store and go; the new path (held by nothing) goes too.
    tw.same_lines("nix-store --gc --print-dead", "nix-store", |_, cmd| {
        cmd.args(["--gc", "--print-dead"]);
    });
    for side in Side::BOTH {
        run(tw.client(side, "nix-store").arg("--gc"));
        for p in [&before[side as usize], &after[side as usize]] {
            assert!(!std::path::Path::new(p).exists(), "{side:?}: {p} was collected");
        }
        run(tw.store(side).nix(&tw.nix, "nix-store").args(["--verify", "--check-contents"]));
    }
}

#[test]
fn state_dir_made_again_under_the_daemon_with_nix_2_8() {
    state_dir_made_again(NixVersion::V2_8);
}

#[test]
fn state_dir_made_again_under_the_daemon_with_nix_2_26() {
    state_dir_made_again(NixVersion::V2_26);
}

/// `db.sqlite` replaced by another store's (a backup restored: the file
/// renamed into place, the old WAL and shared-memory files removed, as
/// they belong to the database they were written for) while a client is
/// connected: that client finishes on the old database, the next ones see
/// the new one, and once the old connection closes the daemon's writes
/// still reach the new database on disk (the last connection to a
/// database deletes `db.sqlite-wal` by name when it closes, unless, as
/// SQLite checks, the database file was moved: the name is the new one's).
fn database_replaced(version: NixVersion) {
    let Some(tw) = Twins::start(version) else { return };
    let mine: [String; 2] = Side::BOTH.map(|side| add(&tw, side, "mine", "in the database being replaced"));
    // The other database: the same store dir, a state dir of its own.
    let theirs: [String; 2] = Side::BOTH.map(|side| {
        let s = tw.store(side);
        let donor = s.root().join("donor");
        let f = s.work_dir("in").join("donated");
        write_file(&f, "in the database put in its place");
        let mut cmd = s.nix(&tw.nix, "nix-store");
        cmd.env("NIX_STATE_DIR", &donor).arg("--add").arg(&f);
        line(run(&mut cmd))
    });
    let mut held: Vec<Client> = Side::BOTH.iter().map(|&side| connect(&tw, side)).collect();
    for (side, c) in Side::BOTH.into_iter().zip(held.iter_mut()) {
        assert!(is_valid_on(c, &mine[side as usize]));
    }
    for side in Side::BOTH {
        let s = tw.store(side);
        let db = s.state_dir.join("db");
        std::fs::rename(s.root().join("donor/db/db.sqlite"), db.join("db.sqlite")).expect("replace db.sqlite");
        for f in ["db.sqlite-wal", "db.sqlite-shm"] {
            let _ = std::fs::remove_file(db.join(f));
        }
    }

    for (side, c) in Side::BOTH.into_iter().zip(held.iter_mut()) {
        assert!(is_valid_on(c, &mine[side as usize]), "{side:?}: the connected client finishes on the old database");
        assert!(!is_valid_on(c, &theirs[side as usize]), "{side:?}: the connected client finishes on the old database");
    }
    let answers = Side::BOTH.map(|side| valid_for_client(&tw, side, &theirs[side as usize]));
    assert!(same_answer("the new database's path, asked by a new client", answers));
    let answers = Side::BOTH.map(|side| valid_for_client(&tw, side, &mine[side as usize]));
    assert!(!same_answer("the old database's path, asked by a new client", answers));

    // The old connection goes; writes through the daemon reach the new
    // database as CppNix sees it on disk.
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let later: [String; 2] = Side::BOTH.map(|side| add(&tw, side, "later", "added once the old client left"));
    let answers = Side::BOTH.map(|side| valid_on_disk(&tw, side, &later[side as usize]));
    assert!(same_answer("a path added after the old client left, in the database on disk", answers));
    tw.same_lines("nix path-info --all", "nix", |_, cmd| {
        cmd.args(["path-info", "--all"]);
    });
    for side in Side::BOTH {
        run(tw.store(side).nix(&tw.nix, "nix-store").args(["--verify", "--check-contents"]));
    }
}

#[test]
fn database_replaced_while_a_client_is_connected_with_nix_2_8() {
    database_replaced(NixVersion::V2_8);
}

#[test]
fn database_replaced_while_a_client_is_connected_with_nix_2_26() {
    database_replaced(NixVersion::V2_26);
}

/// The daemon's temp-roots file unlinked (tmpfiles cleaning `temproots/`)
/// while a client holds a root: the next connection writes it again, with
/// the roots still held, so a collection (here CppNix's own, on the store
/// directly) spares the held path. CppNix's connection processes do not
/// notice: their roots are lost until they disconnect.
#[test]
fn a_removed_temp_roots_file_is_written_again_before_a_collection() {
    let Some(nix) = Nix::find(NixVersion::V2_8) else { return };
    let store = TestStore::new();
    let daemon = Daemon::armitage(&store);
    let (mut holder, _) = Client::connect(&daemon.socket, 34).expect("connect");
    holder.set_options(&Options::default()).expect("SetOptions");
    let outcome = holder
        .call(&Wire::op(Op::AddTextToStore).str("held").str("held by a live client").strings::<_, &str>([]))
        .unwrap();
    assert!(outcome.is_ok(), "AddTextToStore: {:?}", outcome.result);
    let held = holder.read_string("path").unwrap();
    let garbage_src = store.work_dir("in").join("garbage");
    write_file(&garbage_src, "held by nothing");
    let garbage = line(run(daemon.client(&store, &nix, "nix-store").arg("--add").arg(&garbage_src)));

    let roots_file = store.state_dir.join("temproots").join(daemon.pid().to_string());
    assert!(roots_file.exists(), "the daemon keeps its roots in {}", roots_file.display());
    std::fs::remove_dir_all(store.state_dir.join("temproots")).unwrap();

    // Any new client: the daemon checks its roots file when one connects.
    let ping = output(daemon.client(&store, &nix, "nix-store").args(["--check-validity", &held]));
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));
    let listed = std::fs::read(&roots_file).unwrap_or_default();
    assert!(
        listed.split(|&b| b == 0).any(|r| r == held.as_bytes()),
        "the roots file was written again with the held root: {:?}",
        String::from_utf8_lossy(&listed)
    );

    run(store.nix(&nix, "nix-store").arg("--gc"));
    assert!(std::path::Path::new(&held).exists(), "the held path survived CppNix's collection");
    assert!(!std::path::Path::new(&garbage).exists(), "the collection did run");
    assert!(is_valid_on(&mut holder, &held));
}
