//! Build users, CppNix's classic way (src/libstore/lock.cc): the members of
//! `build-users-group`, each claimed by a non-blocking exclusive flock on
//! `$state/userpool/<uid>`, held for the build. The build's gid is the
//! group's; the user's other groups are added.

use std::path::Path;
use local_store::lock::{LockFile, LockKind};

/// A claimed build user.
pub struct BuildUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// Supplementary groups (the user's other groups).
    pub groups: Vec<u32>,
    _lock: LockFile,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn groups() -> Vec<GroupEntry> {
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().unwrap_or(u32::MAX),
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn uid_of(user: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == user).then(|| f[2].parse().ok()).flatten()
    })
}

/// Why no build user could be had.
#[derive(Debug, thiserror::Error)]
pub enum UserPoolError {
    #[error("the group '{0}' specified in 'build-users-group' does not exist")]
    NoGroup(String),
    #[error("the build users group '{0}' has no members")]
    NoMembers(String),
    #[error("the Nix user should not be a member of '{0}'")]
    DaemonIsMember(String),
    #[error("{0}")]
    Io(String),
}

/// Claims a free member of `group`, or `None` if all are busy.
pub fn try_acquire(state_dir: &Path, group: &str, daemon_uid: u32) -> Result<Option<BuildUser>, UserPoolError> {
    let all = groups();
    let entry = all.iter().find(|g| g.name == group).ok_or_else(|| UserPoolError::NoGroup(group.to_owned()))?;
    if entry.members.is_empty() {
        return Err(UserPoolError::NoMembers(group.to_owned()));
    }
    let pool = state_dir.join("userpool");
    std::fs::create_dir_all(&pool).map_err(|e| UserPoolError::Io(format!("creating '{}': {e}", pool.display())))?;
    for member in &entry.members {
        let Some(uid) = uid_of(member) else { continue };
        if uid == daemon_uid {
            return Err(UserPoolError::DaemonIsMember(group.to_owned()));
        }
        let path = pool.join(uid.to_string());
        let lock = LockFile::open(&path, true).map_err(|e| UserPoolError::Io(format!("opening '{}': {e}", path.display())))?;
        if lock.try_lock(LockKind::Exclusive).map_err(|e| UserPoolError::Io(format!("locking '{}': {e}", path.display())))? {
            let groups = all.iter().filter(|g| g.gid != entry.gid && g.members.contains(member)).map(|g| g.gid).collect();
            return Ok(Some(BuildUser { uid, gid: entry.gid, name: member.clone(), groups, _lock: lock }));
        }
    }
    Ok(None)
}
