//! User and group lookups from `/etc/passwd` and `/etc/group` (enough for
//! `build-users-group` and for naming a daemon's peers; names that exist
//! only in other NSS sources are not seen).

/// The gid of a group by name.
pub fn group_gid(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The name of a user by uid.
pub fn user_name(uid: u32) -> Option<String> {
    name_by_id("/etc/passwd", uid)
}

/// The name of a group by gid.
pub fn group_name(gid: u32) -> Option<String> {
    name_by_id("/etc/group", gid)
}

/// The first field of the line whose third field is `id`.
fn name_by_id(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 2 && fields[2].parse::<u32>().ok() == Some(id)).then(|| fields[0].to_owned())
    })
}
