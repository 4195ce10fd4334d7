//! Who is connecting and what they may do (CppNix src/nix/unix/daemon.cc):
//! the peer's uid/gid from `SO_PEERCRED`, user and group names from
//! `/etc/passwd` and `/etc/group`, and the `trusted-users`/`allowed-users`
//! rules (`*` for everyone, a user name, `@group` for the primary group or a
//! listed member). Users of the build users group are always refused.

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

/// The members listed for a group in `/etc/group`.
fn group_members(group: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/etc/group") else { return Vec::new() };
    text.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == group)
                .then(|| fields[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// Whether the peer matches a `trusted-users`/`allowed-users` list.
pub fn matches(list: &[String], peer: &Peer) -> bool {
    list.iter().any(|entry| {
        if entry == "*" || *entry == peer.user {
            return true;
        }
        match entry.strip_prefix('@') {
            Some(g) => g == peer.group || group_members(g).iter().any(|m| *m == peer.user),
            None => false,
        }
    })
}

/// The decision for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Trusted,
    Untrusted,
    Refused,
}

/// CppNix's rules: trusted if in `trusted-users`; refused if neither trusted
/// nor allowed, or if the peer's primary group is the build users group.
pub fn admit(peer: &Peer, trusted_users: &[String], allowed_users: &[String], build_users_group: &str) -> Admission {
    let trusted = matches(trusted_users, peer);
    if (!trusted && !matches(allowed_users, peer)) || (!build_users_group.is_empty() && peer.group == build_users_group) {
        return Admission::Refused;
    }
    if trusted { Admission::Trusted } else { Admission::Untrusted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(user: &str, group: &str) -> Peer {
        Peer { pid: None, uid: 1000, gid: 1000, user: user.into(), group: group.into() }
    }

    #[test]
    fn trust_rules() {
        let t = vec!["root".to_owned(), "@wheel".to_owned()];
        let a = vec!["*".to_owned()];
        assert_eq!(admit(&peer("root", "root"), &t, &a, "nixbld"), Admission::Trusted);
        assert_eq!(admit(&peer("alice", "wheel"), &t, &a, "nixbld"), Admission::Trusted);
        assert_eq!(admit(&peer("bob", "users"), &t, &a, "nixbld"), Admission::Untrusted);
        assert_eq!(admit(&peer("bob", "users"), &t, &["carol".to_owned()], "nixbld"), Admission::Refused);
        assert_eq!(admit(&peer("nixbld1", "nixbld"), &t, &a, "nixbld"), Admission::Refused);
    }
}
