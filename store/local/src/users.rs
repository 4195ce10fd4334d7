//! User and group lookups from `/etc/passwd` and `/etc/group`, the one
//! parser of both files (enough for `build-users-group`, the build user
//! pool, `trusted-users`/`allowed-users` and naming a daemon's peers; names
//! that exist only in other NSS sources are not seen, as with CppNix built
//! without NSS).

use std::path::Path;

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    /// The user names listed in the fourth field.
    pub members: Vec<String>,
}

/// One line of `/etc/passwd` (the fields armitage needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
}

/// Every well-formed line of `/etc/group`.
pub fn groups() -> Vec<Group> {
    groups_in(Path::new("/etc/group"))
}

/// Every well-formed line of `/etc/passwd`.
pub fn users() -> Vec<User> {
    users_in(Path::new("/etc/passwd"))
}

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<u32> {
    groups().into_iter().find(|g| g.name == name).map(|g| g.gid)
}

/// The members listed for a group (none when it does not exist).
pub fn group_members(name: &str) -> Vec<String> {
    groups().into_iter().find(|g| g.name == name).map(|g| g.members).unwrap_or_default()
}

/// The uid of a user by name.
pub fn user_uid(name: &str) -> Option<u32> {
    users().into_iter().find(|u| u.name == name).map(|u| u.uid)
}

/// The name of a user by uid.
pub fn user_name(uid: u32) -> Option<String> {
    users().into_iter().find(|u| u.uid == uid).map(|u| u.name)
}

/// The name of a group by gid.
pub fn group_name(gid: u32) -> Option<String> {
    groups().into_iter().find(|g| g.gid == gid).map(|g| g.name)
}

/// The groups of a `group(5)` file; lines with fewer than three fields or a
/// gid that is not a number are skipped, a missing member field is empty.
pub fn groups_in(file: &Path) -> Vec<Group> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.to_owned();
            let gid = f.nth(1)?.parse().ok()?;
            let members = f.next().unwrap_or("").split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect();
            Some(Group { name, gid, members })
        })
        .collect()
}

/// The users of a `passwd(5)` file; lines with a uid that is not a number
/// are skipped.
pub fn users_in(file: &Path) -> Vec<User> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.to_owned();
            let uid = f.nth(1)?.parse().ok()?;
            Some(User { name, uid })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lines_parse_with_and_without_members_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\nnixbld:x:30000:nixbld1,nixbld2\nbroken\nodd:x:notanumber:a\nshort:x:7\n")
            .unwrap();
        let groups = groups_in(&file);
        assert_eq!(
            groups,
            vec![
                Group { name: "root".into(), gid: 0, members: vec![] },
                Group { name: "nixbld".into(), gid: 30000, members: vec!["nixbld1".into(), "nixbld2".into()] },
                Group { name: "short".into(), gid: 7, members: vec![] },
            ]
        );
    }

    #[test]
    fn passwd_lines_give_names_and_uids() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(
            &file,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbad:x:y:0::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(
            users_in(&file),
            vec![User { name: "root".into(), uid: 0 }, User { name: "alice".into(), uid: 1000 }]
        );
        assert!(users_in(&dir.path().join("missing")).is_empty());
    }
}
