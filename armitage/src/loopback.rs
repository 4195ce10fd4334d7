//! The loopback interface of a fresh network namespace, brought up by
//! whoever made it: the sandbox's build child, or the daemon for a
//! witnessed build's namespace (crate::witness::netns).

/// Brings up the loopback interface of the calling thread's network
/// namespace (a new one: the sandbox's, or the witness's).
pub fn bring_up() -> Result<(), String> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let sock = rustix::net::socket_with(AddressFamily::INET, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| format!("cannot open IP socket: {e}"))?;
    // SAFETY: `ifreq` is plain old data, for which all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS takes a pointer to an `ifreq`, which is what the
    // setter passes; the kernel only reads it.
    unsafe {
        let setter = rustix::ioctl::Setter::<{ libc::SIOCSIFFLAGS as rustix::ioctl::Opcode }, libc::ifreq>::new(req);
        rustix::ioctl::ioctl(&sock, setter)
    }
    .map_err(|e| format!("cannot set loopback interface flags: {e}"))
}
