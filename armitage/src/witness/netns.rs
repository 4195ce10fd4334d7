//! The network namespace of a witnessed fixed-output build: nothing in it
//! but a loopback interface and the witness proxy's listener, so that the
//! proxy is the builder's only way out. The daemon makes it on a thread
//! of its own (a namespace is a thread's: the daemon's other threads keep
//! the host's), binds the listener there, and keeps the namespace open by
//! a descriptor; the build child joins it through `/proc/<daemon>/fd/<n>`
//! before it makes its user namespace. The listener's socket belongs to
//! the namespace it was made in, whichever thread serves it afterwards.
//!
//! Making a network namespace takes `CAP_SYS_ADMIN`: a daemon that is not
//! root cannot ([`supported`] says so once, at start).

use super::bypass::{self, Catchers};
use rustix::fd::{AsRawFd, OwnedFd};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;

/// A namespace made for one build, and the proxy's listener in it.
pub struct BuildNetns {
    fd: OwnedFd,
}

/// What a new namespace holds: the proxy's listener and the catchers of
/// attempts around it.
pub struct Inside {
    pub listener: TcpListener,
    pub catchers: Catchers,
}

impl BuildNetns {
    /// A fresh namespace with its loopback up, every IPv4 address routed
    /// to it, a listener on `127.0.0.1` (a port of the system's choice) and
    /// the catchers of [`super::bypass`] inside it.
    pub fn new() -> io::Result<(BuildNetns, Inside)> {
        std::thread::Builder::new()
            .name("witness-netns".into())
            .spawn(make)?
            .join()
            .map_err(|_| io::Error::other("the thread making a network namespace panicked"))?
    }

    /// The path the build child opens to join it (the daemon's own
    /// descriptor, through /proc: it lives as long as this value).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd()))
    }
}

/// Whether this daemon can make network namespaces (it tries once).
pub fn supported() -> Result<(), io::Error> {
    BuildNetns::new().map(drop)
}

/// On a thread that ends right after: its network namespace is the new one.
fn make() -> io::Result<(BuildNetns, Inside)> {
    // SAFETY: CLONE_NEWNET changes only this thread's network namespace;
    // the flag that splits file tables between threads is not given.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(|e| io::Error::other(format!("cannot make a network namespace: {e}")))?;
    crate::loopback::bring_up().map_err(io::Error::other)?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let catchers = bypass::bind()?;
    let fd = rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io::Error::other(format!("cannot open the new network namespace: {e}")))?;
    Ok((BuildNetns { fd }, Inside { listener, catchers }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn net_ns_of(path: &str) -> std::path::PathBuf {
        std::fs::read_link(path).unwrap()
    }

    #[test]
    fn the_listener_lives_in_a_namespace_of_its_own() {
        let Ok((ns, Inside { listener, catchers: _catchers })) = BuildNetns::new() else {
            eprintln!("skipped: this process cannot make network namespaces (not root)");
            return;
        };
        // The namespace is not the test's, and the path opens it.
        assert_ne!(net_ns_of(ns.path().to_str().unwrap()), net_ns_of("/proc/thread-self/ns/net"));
        let port = listener.local_addr().unwrap().port();
        // From the host's network, the port is not that listener.
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            Ok(_) => {
                // Another listener of the host happens to hold the port: the
                // namespaced one must not have seen a connection.
                listener.set_nonblocking(true).unwrap();
                assert!(listener.accept().is_err());
            }
        }
        // From inside (a thread that joins it), it is.
        let path = ns.path();
        let inside = std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"hello").unwrap();
            // Every IPv4 address is local: a port nobody listens on is
            // refused at once, a caught one (https) is answered.
            let err = std::net::TcpStream::connect(("192.0.2.1", 8099)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
            std::net::TcpStream::connect(("192.0.2.1", 443)).expect("the https catcher's port");
        });
        listener.set_nonblocking(false).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        inside.join().unwrap();
        assert_eq!(got, "hello");
    }
}
