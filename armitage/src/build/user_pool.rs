//! Build users, CppNix's classic way (src/libstore/lock.cc): the members of
//! `build-users-group`, each claimed by a non-blocking exclusive flock on
//! `$state/userpool/<uid>`, held for the build. The build's gid is the
//! group's; the user's other groups are added.

use local_store::lock::{LockFile, LockKind};
use std::path::Path;

/// A claimed build user.
pub struct BuildUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// Supplementary groups (the user's other groups).
    pub groups: Vec<u32>,
    _lock: LockFile,
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
    let all = local_store::users::groups();
    let entry = all.iter().find(|g| g.name == group).ok_or_else(|| UserPoolError::NoGroup(group.to_owned()))?;
    if entry.members.is_empty() {
        return Err(UserPoolError::NoMembers(group.to_owned()));
    }
    let pool = state_dir.join("userpool");
    std::fs::create_dir_all(&pool).map_err(|e| UserPoolError::Io(format!("creating '{}': {e}", pool.display())))?;
    for member in &entry.members {
        let Some(uid) = local_store::users::user_uid(member) else { continue };
        if uid == daemon_uid {
            return Err(UserPoolError::DaemonIsMember(group.to_owned()));
        }
        let path = pool.join(uid.to_string());
        let lock =
            LockFile::open(&path, true).map_err(|e| UserPoolError::Io(format!("opening '{}': {e}", path.display())))?;
        if lock
            .try_lock(LockKind::Exclusive)
            .map_err(|e| UserPoolError::Io(format!("locking '{}': {e}", path.display())))?
        {
            let groups =
                all.iter().filter(|g| g.gid != entry.gid && g.members.contains(member)).map(|g| g.gid).collect();
            return Ok(Some(BuildUser { uid, gid: entry.gid, name: member.clone(), groups, _lock: lock }));
        }
    }
    Ok(None)
}
