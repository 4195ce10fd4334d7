//! Who is connecting (CppNix src/nix/unix/daemon.cc): the peer's pid,
//! uid and gid from `SO_PEERCRED`, and its user and group names from
//! `/etc/passwd` and `/etc/group`. What a peer may do is the policy's
//! (`policy::admit`). A leaf: it uses no other module of the daemon.

use local_store::users::{group_name, user_name};

/// The peer of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
}

impl Peer {
    pub fn from_ids(pid: Option<i32>, uid: u32, gid: u32) -> Peer {
        Peer {
            pid,
            uid,
            gid,
            user: user_name(uid).unwrap_or_else(|| uid.to_string()),
            group: group_name(gid).unwrap_or_else(|| gid.to_string()),
        }
    }
}
