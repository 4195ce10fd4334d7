//! What a witnessed build's namespace does with a builder that ignores the
//! proxy variables: every IPv4 address is local there (a `local` route for
//! 0.0.0.0/0 on the loopback), so a direct connection is refused at once
//! rather than left to time out, and the usual first steps of a fetch
//! around the proxy are caught and recorded before they are refused: a
//! name lookup (glibc asks 127.0.0.1:53 when there is no
//! `/etc/resolv.conf`; the answer is REFUSED) and a connection to the
//! ports of HTTP, HTTPS, SSH and `git://` (reset): protocols the proxy
//! cannot see are refused under `network = witnessed`. Each attempt leaves one record for the build (once per
//! name or address), an error saying it bypassed the proxy.
//!
//! Other ports are refused by the kernel and not recorded; IPv6 has no
//! route at all (unreachable).

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use witness_proxy::archive::Archive;
use witness_proxy::record::{BuildRef, Record};

/// The ports whose connections are caught and recorded: ssh, http,
/// https, git.
const CAUGHT_PORTS: [u16; 4] = [22, 80, 443, 9418];

/// Pause after a failed receive or accept (out of descriptors, say), so
/// that a catcher never spins.
const ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What [`bind`] made inside a namespace, to be served by [`spawn`].
pub struct Catchers {
    dns: UdpSocket,
    tcp: Vec<TcpListener>,
}

/// In the namespace's thread: routes every IPv4 address to the loopback
/// and binds the catchers.
pub fn bind() -> io::Result<Catchers> {
    add_local_route().map_err(|e| io::Error::other(format!("cannot route the namespace to its loopback: {e}")))?;
    let dns = UdpSocket::bind(("0.0.0.0", 53))?;
    dns.set_nonblocking(true)?;
    let mut tcp = Vec::new();
    for port in CAUGHT_PORTS {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        listener.set_nonblocking(true)?;
        tcp.push(listener);
    }
    Ok(Catchers { dns, tcp })
}

/// Serves `catchers` on the current runtime, recording into `archive`
/// for `build`; the tasks run until aborted.
pub fn spawn(
    catchers: Catchers,
    archive: Arc<Archive>,
    build: BuildRef,
) -> io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let recorder = Recorder { archive, build, seen: Arc::new(Mutex::new(HashSet::new())) };
    let mut tasks =
        vec![tokio::spawn(answer_lookups(tokio::net::UdpSocket::from_std(catchers.dns)?, recorder.clone()))];
    for listener in catchers.tcp {
        tasks.push(tokio::spawn(reset_connections(tokio::net::TcpListener::from_std(listener)?, recorder.clone())));
    }
    Ok(tasks)
}

#[derive(Clone)]
struct Recorder {
    archive: Arc<Archive>,
    build: BuildRef,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl Recorder {
    /// Records an attempt on `url` once per build.
    fn record(&self, url: String, method: &str, why: &str) {
        if !self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(url.clone()) {
            return;
        }
        tracing::warn!(drv = %self.build.drv, "{why}: {url}");
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let record = Record::refused(url, method, Some(self.build.clone()), why.to_owned(), at);
        if let Err(e) = self.archive.put_record(&record) {
            tracing::warn!("cannot record a bypass attempt: {e}");
        }
    }
}

async fn answer_lookups(socket: tokio::net::UdpSocket, recorder: Recorder) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        let query = &buf[..n];
        let Some((name, question_end)) = question(query) else { continue };
        recorder.record(
            format!("dns:{name}"),
            "DNS",
            "a name lookup around the witness proxy (network = witnessed), refused",
        );
        let _ = socket.send_to(&refused(query, question_end), peer).await;
    }
}

async fn reset_connections(listener: tokio::net::TcpListener, recorder: Recorder) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        let target = stream.local_addr().map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
        recorder.record(
            format!("tcp://{target}"),
            "CONNECT",
            "a connection around the witness proxy (network = witnessed), reset",
        );
        // A reset, not an orderly close: the client sees a refusal.
        let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(std::time::Duration::ZERO));
    }
}

/// The first question of a DNS query: its name (dotted, lower case) and
/// where the question ends. None for anything else.
fn question(packet: &[u8]) -> Option<(String, usize)> {
    // Header: id, flags (QR must be 0: a query), QDCOUNT >= 1.
    if packet.len() < 12 || packet[2] & 0x80 != 0 || u16::from_be_bytes([packet[4], packet[5]]) == 0 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers do not occur in a question's name.
        if len > 63 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let end = at + 4; // QTYPE, QCLASS
    (end <= packet.len() && !labels.is_empty()).then(|| (labels.join("."), end))
}

/// The answer REFUSED to `query`, echoing its first question.
fn refused(query: &[u8], question_end: usize) -> Vec<u8> {
    let mut answer = query[..question_end].to_vec();
    answer[2] = 0x80 | (query[2] & 0x79); // QR, the query's opcode and RD
    answer[3] = 5; // REFUSED
    answer[4..6].copy_from_slice(&1u16.to_be_bytes());
    answer[6..12].fill(0);
    answer
}

/// `ip route add local 0.0.0.0/0 dev lo table local`, by rtnetlink: in a
/// fresh namespace the loopback is interface 1.
fn add_local_route() -> io::Result<()> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    const RTM_NEWROUTE: u16 = 24;
    const NLM_F_REQUEST_ACK_CREATE_EXCL: u16 = 0x1 | 0x4 | 0x400 | 0x200;
    const NLMSG_ERROR: u16 = 2;
    const RT_TABLE_LOCAL: u8 = 255;
    const RTPROT_BOOT: u8 = 3;
    const RT_SCOPE_HOST: u8 = 254;
    const RTN_LOCAL: u8 = 2;
    const RTA_OIF: u16 = 4;
    const LOOPBACK_INDEX: u32 = 1;
    let sock = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, None)?;
    let mut msg = Vec::with_capacity(36);
    msg.extend_from_slice(&36u32.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK_CREATE_EXCL.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0, RT_TABLE_LOCAL, RTPROT_BOOT, RT_SCOPE_HOST, RTN_LOCAL]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&RTA_OIF.to_ne_bytes());
    msg.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    rustix::net::send(&sock, &msg, rustix::net::SendFlags::empty())?;
    let mut reply = [0u8; 256];
    let (n, _) = rustix::net::recv(&sock, &mut reply, rustix::net::RecvFlags::empty())?;
    // nlmsghdr (16 bytes), then for NLMSG_ERROR the error: 0 is the ack.
    if n < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != NLMSG_ERROR {
        return Err(io::Error::other("unexpected rtnetlink reply"));
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` as glibc sends it (id 0x1234, RD set, type A).
    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn a_query_is_answered_refused_with_its_question() {
        let q = query("Example.org");
        let (name, end) = question(&q).unwrap();
        assert_eq!((name.as_str(), end), ("example.org", q.len()));
        let a = refused(&q, end);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2], 0x81, "a response, recursion desired kept");
        assert_eq!(a[3] & 0x0f, 5, "REFUSED");
        assert_eq!(&a[12..], &q[12..]);
    }

    #[test]
    fn what_is_not_a_query_is_ignored() {
        assert_eq!(question(&[0; 5]), None);
        let mut response = query("a.b");
        response[2] |= 0x80;
        assert_eq!(question(&response), None);
        let q = query("a.b");
        assert_eq!(question(&q[..q.len() - 2]), None, "cut short");
    }
}
