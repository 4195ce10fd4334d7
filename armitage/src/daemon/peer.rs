//! Who is connecting (CppNix src/nix/unix/daemon.cc): the peer's pid,
//! uid and gid from `SO_PEERCRED`, and its user and group names from
//! `/etc/passwd` and `/etc/group`. What a peer may do is the policy's
//! (`policy::admit`). A leaf: it uses no other module of the daemon.

use store::local::users::{group_name, user_name};

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

/// The members listed for a group in `/etc/group`.
pub fn group_members(group: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/etc/group") else { return Vec::new() };
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == group)
                .then(|| fields[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect())
        })
        .unwrap_or_default()
}
